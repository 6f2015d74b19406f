"""The base-model LightningModule: cross-entropy, SGD (or ``model.optimizer``) + one-cycle triangular LR
(paper App. B), stepped per batch.

A network may classify samples (logits ``[B, C]``, labels ``[B]``) or every position of a sequence
(logits ``[B, T, C]``, targets ``[B, T]``, e.g. a language model's next token): then each target
position is a sample of the loss and of every accuracy, and targets equal to ``IGNORE_INDEX`` count
in neither (``kaelab.models.positions.flatten_tokens``).

Lightning's automatic optimisation runs every step (zero_grad, backward, optimizer step, then the
per-step LR scheduler), so gradient clipping, gradient accumulation, a user's ``model.scheduler`` at
any interval and resuming a checkpoint with its step count all come from Lightning itself."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from kaelab.instantiate import instantiate
from kaelab.metrics import last_train_batch
from kaelab.models.factory import build_net
from kaelab.models.positions import flatten_tokens
from kaelab.schedules import build_scheduler, triangular_lr


def decay_param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on Linear weights only; biases and BatchNorm parameters are not decayed."""
    decay, no_decay = [], []
    for m in module.modules():
        for name, p in m.named_parameters(recurse=False):
            (decay if isinstance(m, nn.Linear) and name == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


CKPT_KEY = "kaelab"  # the checkpoint's kaelab section: {"base_model_key": the config key it was trained under}


class Classifier(L.LightningModule):
    """Trains ``build_net(net)``; test metrics land in ``self.test_results`` (accuracies in [0, 1], and
    ``test/nll``: the mean negative log-likelihood of the test targets, nats per target), which the
    base-model stage writes to metrics.json. A Lightning callback (``callbacks`` group) may add its
    own entries to ``test_results`` in ``on_test_end`` (e.g. scripts/examples/pylm.py's ``LMReport``).

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
        self._test_nll = [0.0, 0]  # summed negative log-likelihood (float64), number of targets
        self.cache_key: str | None = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # None: trained under no known key (e.g. resumed from a checkpoint that records none); such
        # a model and everything resumed from it is never registered in the cache
        checkpoint[CKPT_KEY] = {"base_model_key": self.cache_key}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits, y = flatten_tokens(self.net(x), y)
        loss = nn.functional.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self.train_acc.update(logits.detach(), y)  # the epoch's accuracy; no per-batch value is needed
        if self._logger_takes_this_step(batch_idx):
            self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        if last_train_batch(self.trainer, batch_idx):
            # logged once per epoch: Lightning computes the metric at the epoch's end and resets it;
            # a ``self.log(metric)`` per step costs a fifth of a Yin-Yang step in result bookkeeping
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _logger_takes_this_step(self, batch_idx: int) -> bool:
        """Whether Lightning sends this step's metrics to the loggers (every ``log_every_n_steps``
        optimizer steps), or it is the epoch's last batch (whose loss the progress line, the
        callback metrics and metrics.json report). The per-step loss is logged only then: the same
        values reach the logs, without the cost of a ``self.log`` per step, about a quarter of a small
        model's step (``make bench``: ``resmlp_yinyang/framework_overhead``). ``global_step`` counts
        the steps before this one (the optimizer steps after ``training_step`` returns)."""
        trainer = self.trainer
        n = trainer.log_every_n_steps
        return n < 1 or (self.global_step + 1) % n == 0 or last_train_batch(trainer, batch_idx)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits, y = flatten_tokens(self.net(x), y)
        self.val_acc(logits, y)
        self.log("val/loss", nn.functional.cross_entropy(logits, y), sync_dist=True)  # mean over DDP ranks
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits, y = flatten_tokens(self.net(x), y)
        for metric in (self.test_acc, self.test_acc_macro, self.test_acc_per_class):
            metric.update(logits, y)
        nll = nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        self._test_nll[0] += float(nll)
        self._test_nll[1] += len(y)

    def on_test_epoch_end(self) -> None:
        acc, macro = self.test_acc.compute(), self.test_acc_macro.compute()
        per_class = self.test_acc_per_class.compute()
        self.log_dict({"test/acc": acc, "test/acc_macro": macro})
        self.test_results = {
            "test/acc": acc.item(),
            "test/acc_macro": macro.item(),
            "test/acc_per_class": per_class.tolist(),
            "test/nll": self._test_nll[0] / max(1, self._test_nll[1]),
        }
        self._test_nll = [0.0, 0]
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
        else:  # the papers' one-cycle LR, stepped after every optimizer step
            entry = {"scheduler": triangular_lr(opt, steps, o["warmup_frac"]), "interval": "step"}
        return {"optimizer": opt, "lr_scheduler": entry}
