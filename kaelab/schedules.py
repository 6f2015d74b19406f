"""One-cycle triangular learning rate: 0 -> peak over the first ``warmup_frac`` of steps -> 0.

The authors' reference (and Table 3's "cyclic learning rate") uses this piecewise-linear schedule
per optimisation step; it is expressed as a LambdaLR factor on the optimiser's peak lr.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kaelab.errors import ConfigError


def triangular_factor(step: int, total_steps: int, warmup_frac: float) -> float:
    peak = max(1.0, warmup_frac * total_steps)
    return float(np.interp(step, [0.0, peak, float(total_steps)], [0.0, 1.0, 0.0]))


def triangular_lr(optimizer: torch.optim.Optimizer, total_steps: int, warmup_frac: float = 0.2):
    if not 0.0 < warmup_frac < 1.0:
        raise ConfigError(f"warmup_frac must be in (0, 1), got {warmup_frac}")
    total = int(total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: triangular_factor(s, total, warmup_frac))


def build_scheduler(
    node: Any, optimizer: torch.optim.Optimizer, total_steps: int, interval: str = "step", key: str = "model.scheduler"
) -> dict[str, Any]:
    """Lightning's ``lr_scheduler`` entry for a ``_partial_: true`` scheduler config (e.g.
    ``torch.optim.lr_scheduler.CosineAnnealingLR``, ``OneCycleLR``, or this module's
    ``triangular_lr``), called on ``optimizer``; a target that takes ``total_steps`` gets the
    trainer's optimisation steps. ``interval``: "step" or "epoch". A ``ReduceLROnPlateau`` watches
    ``val/loss`` (logged by the classifier every validation)."""
    from kaelab.errors import check_choice
    from kaelab.instantiate import instantiate, takes_argument

    check_choice(interval, ("step", "epoch"), "model.scheduler_interval")
    extra = {"total_steps": int(total_steps)} if takes_argument(node, "total_steps") else {}
    factory = instantiate(node, key, **extra)
    sched = factory(optimizer)
    entry: dict[str, Any] = {"scheduler": sched, "interval": interval}
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        entry["monitor"] = "val/loss"
    return entry
