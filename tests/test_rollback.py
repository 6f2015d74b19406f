"""SpikeRollback: silent until a spike (bit-identical training), then a real rollback and a lower lr.

Wrong implementations these catch: a guard that perturbs training when it never fires (an RNG draw,
a state copy that aliases the live tensors), a rollback that restores the weights but not Adam's
moments, one that forgets to lower the lr, and a KAE cache key that changes when the guard is off.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from kaelab.errors import ConfigError
from kaelab.rollback import SpikeRollback
from kaelab.schedules import triangular_lr


class Regression(L.LightningModule):
    """Noisy linear regression; ``sabotage_epoch``: its weights are blown up at that epoch's start."""

    def __init__(self, sabotage_epoch: int | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.1), nn.Linear(16, 1))
        self.sabotage_epoch = sabotage_epoch
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(256, 8, generator=g)
        self.y = self.x @ torch.randn(8, 1, generator=g)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(self.x, self.y), batch_size=32, shuffle=True)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(self.x, self.y), batch_size=256)

    def on_train_epoch_start(self):
        if self.current_epoch == self.sabotage_epoch:
            with torch.no_grad():
                for p in self.parameters():
                    p.mul_(1e3)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1e-2)
        sched = triangular_lr(opt, self.trainer.estimated_stepping_batches, 0.2)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fit(module: Regression, callbacks=(), epochs: int = 6) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=list(callbacks),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    trainer.fit(module)
    return trainer


def test_a_guard_that_never_fires_leaves_training_bit_identical():
    plain, guarded = Regression(), Regression()
    guarded.load_state_dict(plain.state_dict())
    fit(plain)
    guard = SpikeRollback(factor=10.0)
    fit(guarded, [guard])
    assert guard.rollbacks == []
    for (name, a), b in zip(plain.state_dict().items(), guarded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_spike_is_rolled_back_to_the_last_good_epoch_with_a_lower_lr():
    class Spy(L.Callback):  # runs before the guard: the weights and Adam state of the last good epoch
        def __init__(self):
            self.saved = {}

        def on_train_epoch_end(self, trainer, module):
            if trainer.current_epoch == 1:
                self.saved = {
                    "w": {k: v.clone() for k, v in module.state_dict().items()},
                    "exp_avg": [s["exp_avg"].clone() for s in trainer.optimizers[0].state.values()],
                }

    class AfterGuard(L.Callback):  # runs after the guard at the sabotaged epoch
        def on_train_epoch_end(self, trainer, module):
            if trainer.current_epoch == 2:
                self.w = {k: v.clone() for k, v in module.state_dict().items()}
                self.exp_avg = [s["exp_avg"].clone() for s in trainer.optimizers[0].state.values()]
                self.base_lrs = list(trainer.lr_scheduler_configs[0].scheduler.base_lrs)

    spy, guard, after = Spy(), SpikeRollback(factor=10.0, lr_scale=0.5), AfterGuard()
    module = Regression(sabotage_epoch=2)
    fit(module, [spy, guard, after])
    assert [r["epoch"] for r in guard.rollbacks] == [2]
    for k, v in spy.saved["w"].items():  # weights and optimiser moments of epoch 1, not the blown-up ones
        assert torch.equal(after.w[k], v), k
    for a, b in zip(after.exp_avg, spy.saved["exp_avg"], strict=True):
        assert torch.equal(a, b)
    assert after.base_lrs == [pytest.approx(5e-3)]
    unguarded = Regression(sabotage_epoch=2)
    fit(unguarded)
    loss = {m: nn.functional.mse_loss(m.net.eval()(m.x), m.y).item() for m in (module, unguarded)}
    assert loss[module] < 0.1 * loss[unguarded]


def test_invalid_settings_are_config_errors():
    with pytest.raises(ConfigError, match="factor"):
        SpikeRollback(factor=0.5)
    with pytest.raises(ConfigError, match="lr_scale"):
        SpikeRollback(factor=10, lr_scale=1.5)
