"""The base-model LightningModule: cross-entropy, SGD (or ``model.optimizer``) + one-cycle triangular LR
(paper App. B)."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import GradientAccumulationScheduler
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from kaelab.instantiate import instantiate
from kaelab.metrics import last_train_batch
from kaelab.models.factory import build_net
from kaelab.schedules import build_scheduler, triangular_lr


def decay_param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on Linear weights only; biases and BatchNorm parameters are not decayed."""
    decay, no_decay = [], []
    for m in module.modules():
        for name, p in m.named_parameters(recurse=False):
            (decay if isinstance(m, nn.Linear) and name == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# where a checkpoint's fit loop counts optimizer steps: automatic and manual optimisation
_AUTO_STEPS = "epoch_loop.automatic_optimization.optim_progress"
_MANUAL_STEPS = "epoch_loop.manual_optimization.optim_step_progress"

CKPT_KEY = "kaelab"  # the checkpoint's kaelab section: {"base_model_key": the config key it was trained under}


class Classifier(L.LightningModule):
    """Trains ``build_net(net)``; test metrics land in ``self.test_results`` (accuracies in [0, 1]).

    ``cache_key`` (set by the base-model stage) is written into every checkpoint, so that a resumed
    run can tell whether its checkpoint was trained under the same config."""

    def __init__(
        self,
        net: dict,
        optim: dict,
        num_classes: int,
        label_smoothing: float = 0.0,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        scheduler_interval: str = "step",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = build_net(net)
        self.optim = dict(optim)
        self.optimizer_cfg = optimizer
        self.scheduler_cfg, self.scheduler_interval = scheduler, scheduler_interval
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        # updated every step, computed and logged once per epoch; the per-step argument checks
        # (validate_args) cost about a tenth of a small model's step and the labels come from our own data
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_macro = MulticlassAccuracy(num_classes, average="macro")
        self.test_acc_per_class = MulticlassAccuracy(num_classes, average="none")
        self.test_results: dict[str, Any] = {}
        self.cache_key: str | None = None
        self._forced_automatic: bool | None = None  # set through the automatic_optimization setter

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets and restores ``_current_fx_name`` around every hook it calls, about 45
        # times a step; nn.Module's __setattr__ first looks for the name among parameters, buffers
        # and submodules (1.9 us against 0.2 us here: 1.5% of a Yin-Yang step). It is a string.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def automatic_optimization(self) -> bool:
        """Whether Lightning's automatic optimisation runs the step (closure, zero_grad / backward /
        optimizer-step hooks), or ``training_step`` does (Lightning's manual optimisation).

        The papers' recipe (the built-in one-cycle schedule, stepped per batch) takes the manual
        path: the same zero_grad, ``manual_backward``, ``optimizer.step`` and scheduler step, in the
        same order, so the same weights bit for bit, without the closure machinery, which was about
        a fifth of Lightning's cost per step of the Yin-Yang ResMLP (``make bench``:
        ``resmlp_yinyang/framework_overhead``). What only the automatic loop supports takes it:
        ``trainer.gradient_clip_val``, ``accumulate_grad_batches`` (or its scheduler callback) and a
        ``model.scheduler`` of the user's (an epoch interval, a plateau monitor). (LBFGS, whose step
        needs a closure, takes no parameter groups, so ``model.optimizer`` cannot name it.)"""
        if self._forced_automatic is not None:
            return self._forced_automatic
        trainer = self._trainer
        # asked a few times a step; the answer is a few attribute reads (no cache keyed by the
        # trainer: a new trainer may take a freed one's id)
        return trainer is None or self._needs_automatic(trainer)

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self._forced_automatic = bool(value)

    def _needs_automatic(self, trainer: Any) -> bool:
        return (
            self.scheduler_cfg is not None
            or bool(trainer.gradient_clip_val)
            or trainer.accumulate_grad_batches != 1
            or any(isinstance(cb, GradientAccumulationScheduler) for cb in trainer.callbacks)
        )

    def _optimise(self, loss: torch.Tensor) -> None:
        """One optimisation step on the manual path, in the automatic loop's order: zero_grad,
        backward, optimizer step, then the per-batch LR step (Lightning runs the same hooks:
        on_before_backward / on_after_backward / on_before_optimizer_step)."""
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.lr_schedulers().step()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # None: trained under no known key (e.g. resumed from a checkpoint that records none); such
        # a model and everything resumed from it is never registered in the cache
        checkpoint[CKPT_KEY] = {"base_model_key": self.cache_key}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a checkpoint counts its optimizer steps in the loop that wrote it (the automatic one:
        # written before the manual path existed, or with clipping); global_step reads the count of
        # the loop that resumes, which would restart at 0. Lightning restores the loops after this hook.
        loop = (checkpoint.get("loops") or {}).get("fit_loop")
        auto = ((loop or {}).get(_AUTO_STEPS) or {}).get("optimizer")
        manual = (loop or {}).get(_MANUAL_STEPS)
        if not (auto and auto.get("step") and manual):
            return
        if self.automatic_optimization:
            if auto["step"]["total"]["completed"] == 0 and manual["total"]["completed"] > 0:
                auto["step"] = copy.deepcopy(manual)
        elif manual["total"]["completed"] == 0 and auto["step"]["total"]["completed"] > 0:
            loop[_MANUAL_STEPS] = copy.deepcopy(auto["step"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        log_loss = self._logger_takes_this_step(batch_idx)  # asked before the step moves global_step
        if not self.automatic_optimization:
            self._optimise(loss)
        self.train_acc.update(logits.detach(), y)  # the epoch's accuracy; no per-batch value is needed
        if log_loss:
            self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        if last_train_batch(self._trainer, batch_idx):
            # logged once per epoch: Lightning computes the metric at the epoch's end and resets it;
            # a ``self.log(metric)`` per step cost a fifth of a Yin-Yang step in result bookkeeping
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _logger_takes_this_step(self, batch_idx: int) -> bool:
        """Whether Lightning sends this step's metrics to the loggers (every ``log_every_n_steps``
        optimizer steps), or it is the epoch's last batch (whose loss the progress line, the
        callback metrics and metrics.json report). The per-step loss is logged only then: the same
        values reach the logs, without the cost of a ``self.log`` per step, about a quarter of a small
        model's step (``make bench``: ``resmlp_yinyang/framework_overhead``)."""
        trainer = self._trainer
        if trainer is None:
            return True
        n = trainer.log_every_n_steps
        return n < 1 or (self.global_step + 1) % n == 0 or last_train_batch(trainer, batch_idx)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.val_acc(logits, y)
        self.log("val/loss", nn.functional.cross_entropy(logits, y), sync_dist=True)  # mean over DDP ranks
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        for metric in (self.test_acc, self.test_acc_macro, self.test_acc_per_class):
            metric.update(logits, y)

    def on_test_epoch_end(self) -> None:
        acc, macro = self.test_acc.compute(), self.test_acc_macro.compute()
        per_class = self.test_acc_per_class.compute()
        self.log_dict({"test/acc": acc, "test/acc_macro": macro})
        self.test_results = {
            "test/acc": acc.item(),
            "test/acc_macro": macro.item(),
            "test/acc_per_class": per_class.tolist(),
        }
        for metric in (self.test_acc, self.test_acc_macro, self.test_acc_per_class):
            metric.reset()

    def configure_optimizers(self):
        o = self.optim
        if self.optimizer_cfg is not None:  # model.optimizer: a _partial_ _target_ config
            factory = instantiate(self.optimizer_cfg, "model.optimizer")
            opt = factory(decay_param_groups(self.net, self.optimizer_cfg.get("weight_decay", 0.0)))
        else:
            opt = torch.optim.SGD(
                decay_param_groups(self.net, o["weight_decay"]),
                lr=o["lr"],
                momentum=o["momentum"],
                nesterov=o.get("nesterov", False),
            )
        steps = self.trainer.estimated_stepping_batches
        if self.scheduler_cfg is not None:  # model.scheduler: a _partial_ _target_ config
            entry = build_scheduler(self.scheduler_cfg, opt, steps, self.scheduler_interval)
        else:
            entry = {"scheduler": triangular_lr(opt, steps, o["warmup_frac"]), "interval": "step"}
        return {"optimizer": opt, "lr_scheduler": entry}
