"""The DMD stage's view of its data: the (inputs, labels) tensors of the train, val and test splits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from kaelab.errors import ConfigError

SPLITS = ("train", "val", "test")


def split_tensors(dm: L.LightningDataModule, split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(inputs, labels) of a split: ``dm.tensors`` (kaelab datamodules) or the split's dataloader."""
    if hasattr(dm, "tensors"):
        try:
            return dm.tensors(split)
        except KeyError:
            return None
    loader = getattr(dm, f"{split}_dataloader")()
    if not loader:
        return None
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def study_splits(data: Any, select: str = "none") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"train": (x, y), ["val": (x, y),] "test": (x, y)}`` from a datamodule (set up here) or a
    mapping of those tensors; a train and a test split are needed, a val split for ``select=val``."""
    if isinstance(data, Mapping):
        unknown = set(data) - set(SPLITS)
        if unknown:
            raise ConfigError(f"DMD data: unknown splits {sorted(unknown)}; expected some of {SPLITS}")
        splits = {k: (torch.as_tensor(v[0]), torch.as_tensor(v[1])) for k, v in data.items() if v is not None}
    else:
        for stage in ("fit", "test"):
            data.setup(stage)
        splits = {k: v for k in SPLITS if (v := split_tensors(data, k)) is not None}
    if "train" not in splits or "test" not in splits:
        raise ConfigError("DMD replacement needs a train and a test split")
    if select == "val" and "val" not in splits:
        raise ConfigError("dmd.select=val needs a validation split")
    return splits
