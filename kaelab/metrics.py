"""Accuracy metrics (micro / macro / per-class) and the run's flat ``metrics.json``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.classification import multiclass_accuracy

from kaelab.fileio import atomic_write_text


def last_train_batch(trainer: Any, batch_idx: int) -> bool:
    """Whether ``batch_idx`` is the training epoch's last batch (or the fit stops after it): where a
    module logs the values it accumulated over the epoch. True without a trainer."""
    if trainer is None:
        return True
    return batch_idx + 1 >= trainer.num_training_batches or trainer.should_stop


class EpochMeans:
    """Batch-size-weighted means over an epoch of detached step values, for ``self.log`` once per
    epoch instead of once per step and value. Lightning's per-call bookkeeping of
    ``self.log(on_epoch=True)`` costs the Yin-Yang KAE (7 values a step) more than its own step;
    the means are the ones Lightning would report (each batch weighted by its size)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, values: dict[str, torch.Tensor], n: int) -> None:
        for k, v in values.items():
            v = v.detach() * n
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += n

    def pop(self) -> dict[str, torch.Tensor]:
        """The means since the last ``pop`` (empty if nothing was added), and a fresh start."""
        means = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
        self.sums, self.count = {}, 0
        return means


def accuracy_report(preds: torch.Tensor, target: torch.Tensor, num_classes: int, prefix: str) -> dict:
    """``{prefix}acc`` (top-1 over samples), ``{prefix}acc_macro`` (mean per-class) and per class."""
    kw = dict(num_classes=num_classes, top_k=1)
    return {
        f"{prefix}acc": multiclass_accuracy(preds, target, average="micro", **kw).item(),
        f"{prefix}acc_macro": multiclass_accuracy(preds, target, average="macro", **kw).item(),
        f"{prefix}acc_per_class": multiclass_accuracy(preds, target, average="none", **kw).tolist(),
    }


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def write_metrics(path: str | os.PathLike, metrics: dict[str, Any]) -> Path:
    """Write one flat JSON object atomically (a killed job never leaves a truncated file)."""
    return atomic_write_text(path, json.dumps({k: _plain(v) for k, v in metrics.items()}, indent=2, sort_keys=True))


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric scalar entries of a metrics dict (what loggers can take)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# (stage, its key metrics, its time) for the end-of-run summary; stages a run did not have are skipped
SUMMARY_STAGES = (
    ("base model", ("test/acc", "test/acc_macro", "val/acc"), "train/time_s"),
    ("base model", ("base/test_acc", "base/test_acc_macro"), None),
    ("KAE surrogate", ("kae/test_acc", "kae/test_acc_macro", "kae/agreement", "kae/state_fvu"), "kae/train_time_s"),
    ("KAE path", ("path/fvu_mean", "path/fvu_line_mean", "path/cka_mean"), None),
    (
        "spectrum",
        ("spectrum/radius_K", "spectrum/radius_A", "spectrum/cond_V", "spectrum/effective_rank"),
        "spectrum/time_s",
    ),
    ("DMD hybrid", ("dmd/base_test_acc", "dmd/test_acc", "dmd/layers_replaced"), "dmd/fit_time_s"),
)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes}m{sec:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _short(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def summary_table(cfg: Any, run_dir: Path, metrics: dict[str, Any], elapsed_s: float) -> str:
    """A short table for the end of a run: each stage with its key metrics and time, then where
    the results, checkpoints and figures are."""
    rows: list[tuple[str, str, str]] = []
    shown: set[str] = set()
    for stage, keys, time_key in SUMMARY_STAGES:
        present = [k for k in keys if k in metrics]
        if not present:
            continue
        shown.update(present)
        text = "  ".join(f"{k} {_short(metrics[k])}" for k in present)
        prefix = present[0].split("/", 1)[0]
        if metrics.get(f"{prefix}/cache_hit") is True:
            text += "  (from the cache)"
        took = _duration(float(metrics[time_key])) if time_key and time_key in metrics else "-"
        rows.append((stage, text, took))
    covered = {k.split("/", 1)[0] for k in shown} | {"train", "val", "test", "base", "kae", "dmd"}
    for prefix in sorted({k.split("/", 1)[0] for k in metrics if "/" in k} - covered):  # other stages
        keys = [k for k in metrics if k.startswith(prefix + "/") and isinstance(metrics[k], float)][:4]
        if keys:
            rows.append((prefix, "  ".join(f"{k} {_short(metrics[k])}" for k in keys), "-"))
    run_dir = Path(run_dir)
    figures = sorted(run_dir.rglob("*.png"))
    ckpts = [p for p in (run_dir / "model.ckpt", run_dir / "checkpoints" / "last.ckpt") if p.exists()]
    where = [("results", str(run_dir / "metrics.json"))]
    if ckpts:
        where.append(("checkpoint", str(ckpts[0])))
    if figures:
        dirs = sorted({str(p.parent) for p in figures})
        where.append(("figures", f"{len(figures)} PNG in {', '.join(dirs)}"))
    if getattr(cfg, "paths", None) is not None:
        where.append(("cache", str(cfg.paths.cache_dir)))
    width = max([len(r[0]) for r in rows] + [len(w[0]) for w in where] + [5])
    lines = [f"summary of {cfg.name} (task={cfg.task}), {_duration(elapsed_s)} in all"]
    lines += [f"  {stage:<{width}}  {text}   [{took}]" for stage, text, took in rows]
    lines += [f"  {name:<{width}}  {value}" for name, value in where]
    return "\n".join(lines)
