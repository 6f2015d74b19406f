"""Roll back an epoch whose validation loss spikes, and continue at a lower learning rate.

Not in either paper. The MNIST KAE at the paper's peak lr (5e-3) trains smoothly for most seeds
but one step near the schedule's peak can throw it off: the validation loss rises by orders of
magnitude in one epoch (e.g. 1.2e-4 -> 7.7e-2, gradient norm 7e-4 -> 47, with
``kae.recon_reduction=sum`` and seed 2) and never comes back (surrogate test accuracy 0.13, where
the other seeds reach 0.99). Lowering the lr for every seed would change every result; this guard
changes nothing until a spike happens:

* after each good epoch it keeps an in-memory copy of the module's and the optimisers' state
  (tensors cloned, no RNG touched, so a run in which it never fires is bit-identical to a run
  without it: ``tests/test_rollback.py``);
* when the epoch's ``monitor`` is not finite or exceeds ``factor`` times the best value so far, it
  restores that copy and multiplies the schedulers' base learning rates by ``lr_scale`` (the
  schedule keeps its shape and its clock; the data order moves on with the epoch counter), at most
  ``max_rollbacks`` times, with one warning line each.

The same idea as the loss-spike restarts of large-model training (roll back to a checkpoint, skip
ahead, lower the lr), at epoch granularity because kaelab validates once per epoch.
"""

from __future__ import annotations

import copy
import logging
import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from kaelab.errors import ConfigError

log = logging.getLogger(__name__)


class SpikeRollback(Callback):
    def __init__(self, factor: float, lr_scale: float = 0.5, max_rollbacks: int = 3, monitor: str = "val/loss"):
        if not factor > 1:
            raise ConfigError(f"spike rollback factor={factor} must be > 1 (or null: off)")
        if not 0 < lr_scale < 1:
            raise ConfigError(f"spike rollback lr_scale={lr_scale} must be in (0, 1)")
        self.factor, self.lr_scale, self.max_rollbacks, self.monitor = factor, lr_scale, max_rollbacks, monitor
        self.best = math.inf
        self.rollbacks: list[dict] = []  # one record per rollback: epoch, value, best, new lr scale
        self._snapshot: tuple[dict, list[dict]] | None = None

    def state_dict(self) -> dict:
        return {"best": self.best, "rollbacks": self.rollbacks}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.rollbacks = state["best"], list(state["rollbacks"])

    def _take_snapshot(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._snapshot = (
            {k: v.detach().clone() for k, v in module.state_dict().items()},
            [copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers],
        )

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._take_snapshot(trainer, module)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ConfigError(f"spike rollback monitors {self.monitor!r}, which this module does not log")
        value = float(value)
        if math.isfinite(value) and value <= self.factor * self.best:
            self.best = min(self.best, value)
            self._take_snapshot(trainer, module)
            return
        if len(self.rollbacks) >= self.max_rollbacks or self._snapshot is None:
            log.warning(
                "%s spiked to %.3g at epoch %d (best %.3g) but %d rollbacks are used up: training goes on",
                self.monitor,
                value,
                trainer.current_epoch,
                self.best,
                len(self.rollbacks),
            )
            return
        weights, opt_states = self._snapshot
        # the learning rates in use: restoring the optimiser state would reset them to the snapshot's
        lrs = [[group["lr"] for group in opt.param_groups] for opt in trainer.optimizers]
        module.load_state_dict(weights)
        for opt, state in zip(trainer.optimizers, opt_states, strict=True):
            opt.load_state_dict(state)
        scale = self.lr_scale ** (len(self.rollbacks) + 1)
        for cfg in trainer.lr_scheduler_configs:
            cfg.scheduler.base_lrs = [lr * self.lr_scale for lr in cfg.scheduler.base_lrs]
        if not trainer.lr_scheduler_configs:
            for opt, opt_lrs in zip(trainer.optimizers, lrs, strict=True):
                for group, lr in zip(opt.param_groups, opt_lrs, strict=True):
                    group["lr"] = lr * self.lr_scale
        self.rollbacks.append({"epoch": trainer.current_epoch, "value": value, "best": self.best, "lr_scale": scale})
        # also where a DDP-spawn worker's results reach the launching process (kaelab.training.FitProgress)
        trainer.callback_metrics["kaelab/rollbacks"] = torch.tensor(len(self.rollbacks))
        log.warning(
            "%s spiked to %.3g at epoch %d (best %.3g): rolled back to the previous epoch's weights and "
            "optimiser state, learning rate now x%g",
            self.monitor,
            value,
            trainer.current_epoch,
            self.best,
            scale,
        )
