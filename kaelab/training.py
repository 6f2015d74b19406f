"""Lightning Trainer, loggers and callbacks built from the ``trainer``, ``logger`` and
``callbacks`` config groups; shared by every stage that trains something."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from kaelab.errors import ConfigError
from kaelab.metrics import scalars

log = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")


def build_loggers(cfg: DictConfig, save_dir: Path, run_name: str) -> list[Logger]:
    lc = cfg.logger
    loggers: list[Logger] = []
    if lc.csv:
        loggers.append(CSVLogger(save_dir=str(save_dir), name="csv", version=""))
    if lc.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(save_dir), name="tensorboard", version=""))
    if lc.wandb is not None:
        w = lc.wandb
        if w.mode not in WANDB_MODES:
            raise ConfigError(f"logger.wandb.mode must be one of {WANDB_MODES}, got {w.mode!r}")
        loggers.append(
            WandbLogger(
                name=run_name,
                save_dir=str(save_dir),
                project=w.project,
                entity=w.entity,
                group=w.group,
                tags=list(w.tags),
                mode=w.mode,
                log_model=w.log_model,
            )
        )
    return loggers


def build_callbacks(cfg: DictConfig, ckpt_dir: Path, has_logger: bool) -> list[Callback]:
    cc = cfg.callbacks
    cbs: list[Callback] = []
    if cc.checkpoint:
        cbs.append(
            # keep the newest epoch's checkpoint (no monitor: top-1 = latest) with last.ckpt linking
            # to it; with save_top_k=0 Lightning would write last.ckpt only when training ends
            ModelCheckpoint(
                dirpath=str(ckpt_dir),
                save_last="link",
                save_top_k=1,
                every_n_epochs=cc.checkpoint_every_n_epochs,
            )
        )
    if cc.progress_bar == "tqdm":
        cbs.append(TQDMProgressBar(refresh_rate=cc.progress_refresh_rate))
    elif cc.progress_bar == "rich":
        cbs.append(RichProgressBar(refresh_rate=cc.progress_refresh_rate))
    elif cc.progress_bar != "none":
        raise ConfigError(f"callbacks.progress_bar must be tqdm, rich or none, got {cc.progress_bar!r}")
    if cc.lr_monitor and has_logger:
        cbs.append(LearningRateMonitor(logging_interval="step"))
    return cbs


def configure_runtime(cfg: DictConfig) -> None:
    """Thread count, and one copy of Lightning's log lines (Hydra's root handler prints them)."""
    if cfg.trainer.num_threads:
        torch.set_num_threads(int(cfg.trainer.num_threads))
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")


def build_trainer(
    cfg: DictConfig,
    out_dir: Path,
    max_epochs: int,
    extra_callbacks: Sequence[Callback] = (),
    run_name: str | None = None,
) -> L.Trainer:
    """A Trainer writing logs under ``out_dir`` and checkpoints to ``out_dir/checkpoints``."""
    tc = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(tc, dict)
    tc.pop("num_threads", None)
    tc = {k: v for k, v in tc.items() if v is not None}
    loggers = build_loggers(cfg, out_dir, run_name or cfg.name)
    callbacks = build_callbacks(cfg, out_dir / "checkpoints", bool(loggers)) + list(extra_callbacks)
    return L.Trainer(
        **tc,
        max_epochs=max_epochs,
        default_root_dir=str(out_dir),
        logger=loggers or False,
        callbacks=callbacks,
        enable_checkpointing=bool(cfg.callbacks.checkpoint),
        enable_progress_bar=cfg.callbacks.progress_bar != "none",
        enable_model_summary=False,
    )


def log_hyperparams(trainer: L.Trainer, cfg: DictConfig) -> None:
    params: dict[str, Any] = OmegaConf.to_container(cfg, resolve=False)  # type: ignore[assignment]
    for lg in trainer.loggers:
        lg.log_hyperparams(params)


def log_final_metrics(trainer: L.Trainer, metrics: dict[str, Any]) -> None:
    """Send a stage's final scalar metrics to every logger of its trainer."""
    log_metrics_to(trainer.loggers, metrics, step=trainer.global_step)


def log_metrics_to(loggers: Sequence[Logger], metrics: dict[str, Any], step: int = 0) -> None:
    """Send a stage's final scalar metrics to the given loggers (stages that train nothing)."""
    values = scalars(metrics)
    for lg in loggers:
        lg.log_metrics(values, step=step)
        lg.save()
