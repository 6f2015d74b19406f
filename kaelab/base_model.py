"""Stage 1 of the data path: train (or load) the base classifier.

``train_task`` is ``task=train``: fit, test, metrics.json, resumable with ``ckpt_path``.
``base_model`` is what downstream stages (KAE, DMD) call: it returns a trained model from the
artifact cache, keyed by the data + model config, training it once if it is not there yet, or
loads the user's ``model.checkpoint``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from kaelab.cache import ArtifactCache, config_key, file_digest
from kaelab.data import TensorDataModule, build_datamodule
from kaelab.errors import ConfigError
from kaelab.metrics import write_metrics
from kaelab.models import Classifier
from kaelab.training import build_trainer, log_final_metrics, log_hyperparams

log = logging.getLogger(__name__)

FIT_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")


def build_classifier(cfg: DictConfig, dm: TensorDataModule) -> Classifier:
    net = OmegaConf.to_container(cfg.model.net, resolve=True)
    optim = OmegaConf.to_container(cfg.model.optim, resolve=True)
    if net["out_dim"] != dm.num_classes:
        raise ConfigError(f"model.net.out_dim={net['out_dim']} but the data has {dm.num_classes} classes")
    if net["in_dim"] != dm.in_dim:
        raise ConfigError(f"model.net.in_dim={net['in_dim']} but the data has {dm.in_dim} features")
    return Classifier(net=net, optim=optim, num_classes=dm.num_classes, label_smoothing=cfg.model.label_smoothing)


def fit_classifier(
    cfg: DictConfig,
    out_dir: Path,
    ckpt_path: str | None = None,
    extra_callbacks: Sequence[Callback] = (),
) -> tuple[Classifier, TensorDataModule, L.Trainer, dict[str, Any]]:
    """Fit and test the base model; returns (module, datamodule, trainer, metrics)."""
    if ckpt_path is not None and not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r}: no such checkpoint file")
    L.seed_everything(cfg.model.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg.data)
    dm.prepare_data()
    dm.setup()
    module = build_classifier(cfg, dm)
    trainer = build_trainer(cfg, out_dir, cfg.model.epochs, extra_callbacks)
    log_hyperparams(trainer, cfg)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    train_time = time.perf_counter() - t0
    if trainer.interrupted:
        raise KeyboardInterrupt
    # the fit's last logged values (trainer.test resets callback_metrics)
    fit_metrics = {k: trainer.callback_metrics[k].item() for k in FIT_KEYS if k in trainer.callback_metrics}
    trainer.test(module, datamodule=dm, verbose=False)
    metrics: dict[str, Any] = {**module.test_results, **fit_metrics, "train/time_s": train_time}
    metrics["train/epochs"] = trainer.current_epoch
    metrics["train/steps"] = trainer.global_step
    log_final_metrics(trainer, metrics)
    return module, dm, trainer, metrics


def train_task(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """``task=train``: fit + test the base model in the run directory.

    The finished model is also registered in the artifact cache, so a KAE or DMD stage with the
    same data + model config reuses it instead of training again.
    """
    callbacks = []
    if cfg.dmd is not None:  # `+dmd=...` on a training run: the DMD study runs when the fit ends
        from kaelab.dmd.callback import DMDReplacement

        callbacks.append(DMDReplacement(cfg.dmd, out_dir=run_dir / "dmd"))
    module, dm, trainer, metrics = fit_classifier(cfg, run_dir, ckpt_path=cfg.ckpt_path, extra_callbacks=callbacks)
    for cb in callbacks:
        metrics.update(cb.metrics)
    if not cfg.trainer.fast_dev_run:
        trainer.save_checkpoint(run_dir / "model.ckpt")

        def register(tmp: Path) -> None:
            shutil.copy2(run_dir / "model.ckpt", tmp / "model.ckpt")
            write_metrics(tmp / "metrics.json", metrics)

        ArtifactCache(cfg.paths.cache_dir).get_or_build("base_model", base_model_key(cfg), register, _manifest(cfg))
    log.info("test/acc=%.4f test/acc_macro=%.4f", metrics["test/acc"], metrics["test/acc_macro"])
    return metrics


@dataclass
class BaseModel:
    """A trained base classifier (eval mode) with its data and the cache key that identifies it."""

    module: Classifier
    datamodule: TensorDataModule
    key: str
    ckpt_path: Path
    metrics: dict[str, Any]
    cache_hit: bool = True  # False when this call trained it

    @property
    def net(self) -> torch.nn.Module:
        return self.module.net


def _manifest(cfg: DictConfig) -> dict[str, Any]:
    return {
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
    }


def base_model_key(cfg: DictConfig) -> str:
    if cfg.model.checkpoint:
        return config_key("checkpoint", file_digest(cfg.model.checkpoint))
    data = OmegaConf.to_container(cfg.data, resolve=True)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(data, dict) and isinstance(model, dict)
    # where the files live and whether they may be downloaded don't change the model
    for k in ("eval_batch_size", "root", "download"):
        data.pop(k, None)
    if not data.get("exclude_classes"):  # keeps the keys of models trained on every class unchanged
        data.pop("exclude_classes", None)
    model.pop("checkpoint", None)
    return config_key("base_model", data, model, trainer_key_settings(cfg))


def trainer_key_settings(cfg: DictConfig) -> list[Any]:
    """Trainer settings that change what gets trained (a fast_dev_run model must not pass for a
    real one); part of the cache key of every trained artifact."""
    tc = cfg.trainer
    return [tc.precision, tc.fast_dev_run, tc.limit_train_batches, tc.gradient_clip_val]


def base_model(cfg: DictConfig, work_dir: Path, extra_callbacks: Sequence[Callback] = ()) -> BaseModel:
    """The trained base model for ``cfg``: from ``model.checkpoint``, the cache, or trained now.

    Training logs go to ``work_dir``; the checkpoint and its test metrics go to the cache.
    """
    dm = build_datamodule(cfg.data)
    dm.prepare_data()
    dm.setup()
    cache_hit = True
    if cfg.model.checkpoint:
        ckpt = Path(cfg.model.checkpoint)
        if not ckpt.is_file():
            raise ConfigError(f"model.checkpoint={str(ckpt)!r}: no such checkpoint file")
        key, metrics = base_model_key(cfg), {}
    else:
        key = base_model_key(cfg)

        def build(tmp: Path) -> None:
            nonlocal cache_hit
            cache_hit = False
            _, _, trainer, m = fit_classifier(cfg, work_dir, extra_callbacks=extra_callbacks)
            trainer.save_checkpoint(tmp / "model.ckpt")
            write_metrics(tmp / "metrics.json", m)

        path = ArtifactCache(cfg.paths.cache_dir).get_or_build("base_model", key, build, _manifest(cfg))
        ckpt = path / "model.ckpt"
        metrics = json.loads((path / "metrics.json").read_text())
    module = Classifier.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True)
    module.eval()
    return BaseModel(module=module, datamodule=dm, key=key, ckpt_path=ckpt, metrics=metrics, cache_hit=cache_hit)
