"""Plain Linear+ReLU MLP (the DMD paper's networks)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """``in_dim -> hidden[0] -> ... -> hidden[-1] -> out_dim``, ReLU after every hidden Linear.

    ``layers.{t}`` is Linear+ReLU number t, so the hidden states are the outputs of ``layers.*``.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int):
        super().__init__()
        dims = [in_dim, *hidden]
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.head = nn.Linear(dims[-1], out_dim)

    @staticmethod
    def trajectory_spec() -> dict:
        """States: the output of every hidden layer (kaelab.models.trajectory)."""
        return {"stages": ["layers.*"], "head": "head"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)
