"""SpikeRollback's decisions epoch by epoch, on a stand-in trainer (no fit: milliseconds), where
tests/test_rollback.py checks one real rollback inside a Lightning fit.

Wrong implementations these catch: one rollback more than ``max_rollbacks``; a NaN validation loss
taken for a good epoch; the best value never improving after the first epoch (a spike relative to a
better later epoch missed); a rollback to the first epoch's weights instead of the last good
epoch's; the learning rate not lowered when there is no scheduler; the recorded lr scale not
compounding over repeated rollbacks.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from kaelab.rollback import SpikeRollback


class Run:
    """A module and a stand-in for the Trainer attributes the guard reads and writes."""

    def __init__(self, guard: SpikeRollback, scheduler: bool = True):
        self.guard, self.module = guard, torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(self.module.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        self.trainer = SimpleNamespace(
            callback_metrics={}, optimizers=[opt], current_epoch=0,
            lr_scheduler_configs=[SimpleNamespace(scheduler=sched)] if scheduler else [],
        )  # fmt: skip
        guard.on_train_start(self.trainer, self.module)

    def epoch(self, value: float, weight: float) -> float:
        """One epoch that leaves the weights at ``weight`` and the validation loss at ``value``;
        returns the weight after the guard."""
        with torch.no_grad():
            self.module.weight.fill_(weight)
        self.trainer.callback_metrics["val/loss"] = torch.tensor(value)
        self.guard.on_train_epoch_end(self.trainer, self.module)
        self.trainer.current_epoch += 1
        return self.module.weight[0, 0].item()


def test_at_most_max_rollbacks():
    run = Run(SpikeRollback(factor=10.0, max_rollbacks=2))
    run.epoch(1.0, 1.0)
    for w in (2.0, 3.0, 4.0, 5.0):
        run.epoch(100.0, w)
    assert len(run.guard.rollbacks) == 2
    assert run.module.weight[0, 0].item() == 5.0  # used up: training goes on from the spiked weights


def test_a_nan_loss_is_rolled_back_to_the_last_good_epoch():
    run = Run(SpikeRollback(factor=10.0))
    run.epoch(1.0, 1.0)
    run.epoch(0.9, 2.0)
    assert run.epoch(math.nan, 3.0) == 2.0  # the last good epoch's weights, not the first's
    assert [r["epoch"] for r in run.guard.rollbacks] == [2]
    assert run.epoch(100.0, 4.0) == 2.0  # the NaN epoch did not become the snapshot


def test_a_spike_relative_to_the_best_epoch_so_far():
    run = Run(SpikeRollback(factor=10.0))
    run.epoch(1.0, 1.0)
    run.epoch(0.01, 2.0)
    assert run.epoch(0.5, 3.0) == 2.0  # 50x the best (0.01), though below the first epoch's 1.0
    assert run.guard.best == pytest.approx(0.01)


def test_without_a_scheduler_the_optimiser_lr_is_lowered_and_the_scale_compounds():
    run = Run(SpikeRollback(factor=10.0, lr_scale=0.5), scheduler=False)
    run.epoch(1.0, 1.0)
    run.epoch(100.0, 2.0)
    run.epoch(100.0, 3.0)
    assert run.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.025)
    assert [r["lr_scale"] for r in run.guard.rollbacks] == [0.5, 0.25]
