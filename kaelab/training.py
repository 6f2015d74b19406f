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
from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import DictConfig, OmegaConf

from kaelab.instantiate import instantiate, named_entries, unset_arguments
from kaelab.metrics import scalars
from kaelab.precision import configure_matmul, resolve_precision

log = logging.getLogger(__name__)


def build_loggers(logger_cfg: Any, save_dir: Path, run_name: str) -> list[Logger]:
    """The loggers of the ``logger`` group (named ``_target_`` configs; null: off). One that takes
    ``save_dir`` or ``name`` and sets none gets the stage's log dir or run name."""
    filled = {"save_dir": str(save_dir), "name": run_name}
    return [_build(node, f"logger.{name}", filled) for name, node in named_entries(logger_cfg, "logger")]


def build_callbacks(callbacks_cfg: Any, ckpt_dir: Path, has_logger: bool) -> list[Callback]:
    """The callbacks of the ``callbacks`` group (named ``_target_`` configs; null: off), plus
    kaelab's always-on FlushLogs when there is a logger. One that takes ``dirpath`` and sets none
    (ModelCheckpoint) gets ``ckpt_dir``; a live progress bar becomes EpochLines off a terminal; a
    LearningRateMonitor is left out without a logger (it has nowhere to write)."""
    filled = {"dirpath": str(ckpt_dir)}
    cbs = [_build(node, f"callbacks.{name}", filled) for name, node in named_entries(callbacks_cfg, "callbacks")]
    cbs = [_bar_for_this_output(cb) for cb in cbs if has_logger or not isinstance(cb, LearningRateMonitor)]
    return cbs + [FlushLogs()] if has_logger else cbs


def _build(node: Any, key: str, filled: dict[str, Any]) -> Any:
    """``node``'s object, given the ``filled`` arguments its target takes and ``node`` leaves unset;
    plain lists and dicts as arguments (``_convert_: all``; e.g. W&B's ``tags``)."""
    spec = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    spec.setdefault("_convert_", "all")
    return instantiate(spec, key, **unset_arguments(spec, filled))


def _bar_for_this_output(cb: Callback) -> Callback:
    """A live bar (Lightning's TQDM or Rich) in a log file is a refresh per batch: off a terminal it
    is replaced by EpochLines (a few epoch lines). Other callbacks, and bar subclasses, are kept."""
    if type(cb) in (TQDMProgressBar, RichProgressBar) and not interactive():
        return EpochLines()
    return cb


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
    will not repeat. (An epoch's last rows are logged after its checkpoint: without the flush on
    an interrupt, a SIGINT right after the checkpoint, before the next epoch's start, loses them.)"""

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


def configure_runtime(trainer_cfg: Any) -> None:
    """Thread count (``trainer.num_threads``), float32 products (TF32 with ``$KAELAB_TF32=1``:
    ``kaelab.precision.configure_matmul``), and one copy of Lightning's log lines (Hydra's root
    handler prints them)."""
    threads = trainer_cfg.get("num_threads") if trainer_cfg is not None else None
    if threads:
        torch.set_num_threads(int(threads))
    configure_matmul()
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
    trainer_cfg: Any,
    out_dir: Path,
    max_epochs: int,
    extra_callbacks: Sequence[Callback] = (),
    *,
    logger: Any = None,
    callbacks: Any = None,
    run_name: str = "kaelab",
) -> L.Trainer:
    """A Trainer from the ``trainer`` group's settings, with the ``logger`` and ``callbacks`` groups'
    objects (none when not given) writing logs under ``out_dir`` and checkpoints to
    ``out_dir/checkpoints``; plus ``extra_callbacks`` and kaelab's always-on FitProgress."""
    tc = OmegaConf.to_container(trainer_cfg, resolve=True) if isinstance(trainer_cfg, DictConfig) else dict(trainer_cfg)
    tc = {k: v for k, v in tc.items() if v is not None and k != "num_threads"}
    tc["precision"] = resolve_precision(tc.get("precision", "32-true"), str(tc.get("accelerator", "cpu")))
    loggers = build_loggers(logger, out_dir, run_name)
    cbs = build_callbacks(callbacks, out_dir / "checkpoints", bool(loggers)) + list(extra_callbacks) + [FitProgress()]
    return L.Trainer(
        **tc,
        max_epochs=max_epochs,
        default_root_dir=str(out_dir),
        logger=loggers or False,
        callbacks=cbs,
        enable_checkpointing=any(isinstance(cb, ModelCheckpoint) for cb in cbs),
        enable_progress_bar=any(isinstance(cb, ProgressBar) for cb in cbs),
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
