"""Lightning Trainer, loggers and callbacks built from the ``trainer``, ``logger`` and
``callbacks`` config groups; shared by every stage that trains something."""

from __future__ import annotations

import csv
import logging
import math
import sys
import time
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
    ProgressBar,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from kaelab.dashboards import wandb_enabled
from kaelab.errors import ConfigError
from kaelab.instantiate import instantiate, logger_needs_dir
from kaelab.metrics import scalars

log = logging.getLogger(__name__)


def build_loggers(cfg: DictConfig, save_dir: Path, run_name: str) -> list[Logger]:
    lc = cfg.logger
    loggers: list[Logger] = []
    if lc.csv:
        loggers.append(CSVLogger(save_dir=str(save_dir), name="csv", version=""))
    if lc.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(save_dir), name="tensorboard", version=""))
    if wandb_enabled(cfg):  # logs into the job's W&B run (kaelab.dashboards), opened here if none is
        w = lc.wandb
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
    for name, node in (lc.get("extra") or {}).items():
        if node is None:
            continue
        given = {"save_dir": str(save_dir)} if logger_needs_dir(node) else {}
        loggers.append(instantiate(node, f"logger.extra.{name}", **given))
    return loggers


def build_callbacks(cfg: DictConfig, ckpt_dir: Path, has_logger: bool) -> list[Callback]:
    cc = cfg.callbacks
    cbs: list[Callback] = []
    if cc.checkpoint:
        cbs.append(
            # keep the newest epoch's checkpoint (no monitor: top-1 = latest) with last.ckpt linking
            # to it; with save_top_k=0 Lightning would write last.ckpt only when training ends.
            # No version counter: a run resumed in place keeps updating last.ckpt (not last-v1.ckpt)
            ModelCheckpoint(
                dirpath=str(ckpt_dir),
                save_last="link",
                save_top_k=1,
                every_n_epochs=cc.checkpoint_every_n_epochs,
                enable_version_counter=False,
            )
        )
    if cc.progress_bar not in ("tqdm", "rich", "none"):
        raise ConfigError(f"callbacks.progress_bar must be tqdm, rich or none, got {cc.progress_bar!r}")
    if cc.progress_bar != "none" and not interactive():
        cbs.append(EpochLines())  # a log file gets a few lines, not every refresh of a live bar
    elif cc.progress_bar == "tqdm":
        cbs.append(TQDMProgressBar(refresh_rate=cc.progress_refresh_rate))
    elif cc.progress_bar == "rich":
        cbs.append(RichProgressBar(refresh_rate=cc.progress_refresh_rate))
    if cc.lr_monitor and has_logger:
        cbs.append(LearningRateMonitor())  # each scheduler at its own interval (step or epoch)
    if has_logger:
        cbs.append(FlushLogs())
    for name, node in (cc.get("extra") or {}).items():
        if node is not None:
            cbs.append(instantiate(node, f"callbacks.extra.{name}"))
    return cbs


def interactive() -> bool:
    """Whether a person watches this process's output live (a terminal), not a log file."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class EpochLines(ProgressBar):
    """Progress for non-interactive runs: one log line per epoch at most, for about ``lines``
    evenly spaced epochs of the run (the first and the last included)."""

    def __init__(self, lines: int = 20):
        super().__init__()
        self.lines = lines
        self._enabled = True
        self._t0 = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()
        self._first_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        total = total if total and total > 0 else None
        every = max(1, math.ceil(total / self.lines)) if total else 1
        if not (epoch == self._first_epoch + 1 or epoch % every == 0 or epoch == total):
            return
        metrics = self.get_metrics(trainer, pl_module)
        shown = "  ".join(f"{k} {_fmt(v)}" for k, v in metrics.items() if k != "v_num")
        per_epoch = (time.perf_counter() - self._t0) / max(1, epoch - self._first_epoch)
        where = f"epoch {epoch}/{total} ({100 * epoch / total:.0f}%)" if total else f"epoch {epoch}"
        eta = f", eta {_duration(per_epoch * (total - epoch))}" if total else ""
        log.info("%s  %s  (%s/epoch%s)", where, shown, _duration(per_epoch), eta)


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes}m{sec:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class FitProgress(Callback):
    """Puts the fit's epoch and step counts in the callback metrics when training ends: the one
    place a DDP-spawn worker's results travel back to the launching process (whose own trainer
    never stepped); ``fit_progress`` reads them."""

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.callback_metrics["kaelab/epochs"] = torch.tensor(trainer.current_epoch)
        trainer.callback_metrics["kaelab/steps"] = torch.tensor(trainer.global_step)


def fit_progress(trainer: L.Trainer) -> tuple[int, int]:
    """(epochs, optimizer steps) of the trainer's fit, also after a multi-process fit."""
    cm = trainer.callback_metrics
    if trainer.world_size > 1 and "kaelab/steps" in cm:
        return int(cm["kaelab/epochs"]), int(cm["kaelab/steps"])
    return trainer.current_epoch, trainer.global_step


class FlushLogs(Callback):
    """Write the loggers' buffered rows to disk when an epoch starts, when a checkpoint is saved
    and when training is interrupted (SIGINT), so that the log on disk covers every epoch a resume
    will not repeat. (An epoch's last rows are logged after its checkpoint: a SIGINT right after
    the checkpoint, before the next epoch's start, had lost them.)"""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _save_loggers(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        _save_loggers(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        _save_loggers(trainer)


def _save_loggers(trainer: L.Trainer) -> None:
    for lg in trainer.loggers:
        if isinstance(lg, CSVLogger):
            lg.save()


def csv_history(out_dir: Path, before_step: int) -> tuple[list[str], list[dict[str, str]]] | None:
    """The CSV log rows of ``out_dir`` (header, rows) logged before ``before_step``: what a run
    resumed in place at that step keeps (Lightning's CSVLogger starts a new file)."""
    path = Path(out_dir) / "csv" / "metrics.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r.get("step", "").isdigit() and int(r["step"]) < before_step]
        header = list(reader.fieldnames or [])
    return header, rows


def restore_csv_history(trainer: L.Trainer, history: tuple[list[str], list[dict[str, str]]] | None) -> None:
    """Put the rows of ``csv_history`` back in front of a resumed run's CSV log."""
    if not history:
        return
    header, rows = history
    for lg in trainer.loggers:
        if isinstance(lg, CSVLogger):
            writer = lg.experiment  # creating it removes the old file; the rows are rewritten here
            with open(writer.metrics_file_path, "w", newline="") as f:
                out = csv.DictWriter(f, fieldnames=header)
                out.writeheader()
                out.writerows(rows)
            writer.metrics_keys = sorted(header)


def adopt_worker_csv(trainer: L.Trainer) -> None:
    """After a multi-process (DDP spawn) fit, rank 0's worker wrote the CSV log; make this process's
    CSV writer continue that file (its header), not clash with it, when the stage logs its final metrics."""
    if trainer.world_size <= 1:
        return
    for lg in trainer.loggers:
        if isinstance(lg, CSVLogger) and Path(lg.experiment.metrics_file_path).is_file():
            with open(lg.experiment.metrics_file_path, newline="") as f:
                lg.experiment.metrics_keys = list(csv.DictReader(f).fieldnames or [])


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
    # logger=wandb: every stage's WandbLogger joins the job's run on purpose (kaelab.dashboards)
    warnings.filterwarnings("ignore", message=".*wandb run already in progress.*")
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in rank_zero.filters):
        rank_zero.addFilter(_DropTips())


class _DropTips(logging.Filter):
    """Lightning's advertisement line ("Tip: ... litlogger") in every run's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


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
    callbacks = build_callbacks(cfg, out_dir / "checkpoints", bool(loggers)) + list(extra_callbacks) + [FitProgress()]
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
