"""Residual MLP of the KAE paper (Appendix B), as in the authors' reference code.

input_layer = Linear -> BatchNorm1d -> ReLU
ResBlock(c)  = ReLU(x + BN(Linear(ReLU(BN(Linear(x))))))
head         = Linear

The representation x_i of the paper is the output of ``input_layer``; x_j (penultimate) is the
output of the last block, i.e. the input of ``head``.
"""

from __future__ import annotations

import torch
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(width, width), nn.BatchNorm1d(width)
        self.fc2, self.bn2 = nn.Linear(width, width), nn.BatchNorm1d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.fc1(x)))
        return torch.relu(x + self.bn2(self.fc2(h)))


class ResMLP(nn.Module):
    """``in_dim -> width`` input layer, ``n_blocks`` residual blocks of ``width``, linear head."""

    def __init__(self, in_dim: int, width: int, n_blocks: int, out_dim: int):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Linear(in_dim, width), nn.BatchNorm1d(width), nn.ReLU())
        self.blocks = nn.ModuleList(ResBlock(width) for _ in range(n_blocks))
        self.head = nn.Linear(width, out_dim)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    @staticmethod
    def trajectory_spec() -> dict:
        """States: x_i = output of the input layer, then the output of every block (kaelab.models.trajectory)."""
        return {"stages": ["input_layer", "blocks.*"], "head": "head"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_layer(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)
