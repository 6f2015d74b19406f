"""Accuracy metrics (micro / macro / per-class) and the run's flat ``metrics.json``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.classification import multiclass_accuracy


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({k: _plain(v) for k, v in metrics.items()}, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric scalar entries of a metrics dict (what loggers can take)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
