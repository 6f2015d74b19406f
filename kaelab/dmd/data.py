"""The DMD stage's view of a datamodule: the (inputs, labels) tensors of a split."""

from __future__ import annotations

import lightning as L
import torch


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
