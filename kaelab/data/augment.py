"""Batch-level data augmentation for flattened images (applied in ``on_after_batch_transfer``)."""

from __future__ import annotations

import torch


def random_translate(
    x: torch.Tensor, side: int, max_shift: int, generator: torch.Generator, fill: float = 0.0
) -> torch.Tensor:
    """Shift each flattened ``side x side`` image by independent integer offsets in
    [-max_shift, max_shift] per axis, filling uncovered pixels with ``fill``; returns [n, side^2]."""
    n = len(x)
    pad = max_shift
    imgs = torch.nn.functional.pad(x.reshape(n, side, side), (pad, pad, pad, pad), value=fill)
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=generator.device).to(x.device)
    base = torch.arange(side, device=x.device)
    rows = (base[None, :] + offsets[0][:, None])[:, :, None]  # [n, side, 1]
    cols = (base[None, :] + offsets[1][:, None])[:, None, :]  # [n, 1, side]
    return imgs[torch.arange(n, device=x.device)[:, None, None], rows, cols].reshape(n, side * side)
