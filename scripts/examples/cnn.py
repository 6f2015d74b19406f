"""A small CNN for MNIST, a network kaelab has never seen.

A stem convolution, three residual conv blocks at 14x14 (the trajectory's states, ``[B, C, 14, 14]``
flattened by kaelab), global average pooling and a linear head. Its trajectory is named in the
experiment config (conf/experiment/mnist_cnn.yaml); kaelab never imports this file.
"""

from __future__ import annotations

import torch
from torch import nn


class Stem(nn.Module):
    def __init__(self, side: int, channels: int):
        super().__init__()
        self.side = side
        self.conv = nn.Sequential(nn.Conv2d(1, channels, 3, stride=2, padding=1), nn.BatchNorm2d(channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.reshape(-1, 1, self.side, self.side))


class ConvBlock(nn.Module):
    """ReLU(x + BN(conv(ReLU(BN(conv(x))))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class PoolHead(nn.Module):
    def __init__(self, channels: int, out_dim: int):
        super().__init__()
        self.fc = nn.Linear(channels, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class SmallCNN(nn.Module):
    def __init__(self, side: int = 28, channels: int = 8, depth: int = 3, out_dim: int = 10):
        super().__init__()
        self.stem = Stem(side, channels)
        self.blocks = nn.Sequential(*(ConvBlock(channels) for _ in range(depth)))
        self.head = PoolHead(channels, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))
