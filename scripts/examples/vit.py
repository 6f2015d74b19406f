"""A small vision transformer for MNIST, a network kaelab has never seen.

Patch embedding (7x7 patches of the 28x28 image -> 16 tokens, plus a class token and learned
positions), a residual stream through pre-norm attention + MLP blocks, and a head reading the class
token. Its trajectory is named in the experiment config (conf/experiment/mnist_vit.yaml):
``model.trajectory: {stages: [embed, "blocks.*"], head: head}``; kaelab never imports this file,
Hydra builds it from ``model.net._target_: scripts.examples.vit.ViT``.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Flat images ``[B, side*side]`` -> residual stream ``[B, 1 + patches, dim]``."""

    def __init__(self, side: int, patch: int, dim: int):
        super().__init__()
        if side % patch:
            raise ValueError(f"patch={patch} does not divide the image side {side}")
        self.side = side
        self.proj = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, 1 + (side // patch) ** 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(x.reshape(-1, 1, self.side, self.side)).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1) + self.pos


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then + MLP(LN(.))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ClassTokenHead(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm, self.fc = nn.LayerNorm(dim), nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x[:, 0]))


class ViT(nn.Module):
    def __init__(self, side: int = 28, patch: int = 7, dim: int = 64, depth: int = 4, heads: int = 4,
                 mlp_ratio: int = 2, out_dim: int = 10):  # fmt: skip
        super().__init__()
        self.embed = PatchEmbed(side, patch, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.head = ClassTokenHead(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)
