"""The Yin-Yang dataset (Kriener, Göltz & Petrovici, NICE 2022), generated in memory.

Sampling follows the reference generator exactly (same RNG calls, so seed 42 gives the reference's
training set): for each sample a goal class is drawn uniformly, then points are drawn uniformly in
[0, 2 r_big]^2, rejected outside the big circle, until one of the goal class is found.

``binary=True`` is the DMD paper's two-class variant: the dots (class 2) are removed by drawing the
goal class from {yin, yang} only.
"""

from __future__ import annotations

import numpy as np
import torch

from kaelab.data.tensor_data import TensorDataModule
from kaelab.errors import ConfigError, check_choice

FEATURES = ("xy", "xy_mirror")


def yinyang_class(x, y, r_small: float = 0.1, r_big: float = 0.5):
    """Class of points (x, y): 0 yang, 1 yin, 2 dots. Vectorised over numpy arrays or scalars."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    d_right = np.hypot(x - 1.5 * r_big, y - r_big)
    d_left = np.hypot(x - 0.5 * r_big, y - r_big)
    is_yin = (
        (d_right <= r_small) | ((d_left > r_small) & (d_left <= 0.5 * r_big)) | ((y > r_big) & (d_right > 0.5 * r_big))
    )
    is_dot = (d_right < r_small) | (d_left < r_small)
    return np.where(is_dot, 2, is_yin.astype(np.int64))


def yinyang_sample(
    n: int, seed: int, r_small: float = 0.1, r_big: float = 0.5, binary: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` points with the reference's rejection sampler. Returns (xy [n, 2], labels [n])."""
    rng = np.random.RandomState(seed)
    n_classes = 2 if binary else 3
    points = np.empty((n, 2))
    labels = np.empty(n, dtype=np.int64)
    for i in range(n):
        goal = rng.randint(n_classes)
        while True:
            x, y = rng.rand(2) * 2.0 * r_big
            if np.hypot(x - r_big, y - r_big) > r_big:
                continue
            if int(yinyang_class(x, y, r_small, r_big)) == goal:
                break
        points[i] = (x, y)
        labels[i] = goal
    return points, labels


def yinyang_features(points: np.ndarray | torch.Tensor, features: str = "xy") -> torch.Tensor:
    """(x, y) or, with ``xy_mirror``, the original dataset's (x, y, 1-x, 1-y)."""
    check_choice(features, FEATURES, "data.features")
    p = torch.as_tensor(points, dtype=torch.float32)
    return torch.cat([p, 1.0 - p], dim=1) if features == "xy_mirror" else p


class YinYangDataModule(TensorDataModule):
    """Train / val / test drawn with distinct seeds (defaults 5000/1000/1000, seeds 42/41/40)."""

    def __init__(
        self,
        n_train: int = 5000,
        n_val: int = 1000,
        n_test: int = 1000,
        seed_train: int = 42,
        seed_val: int = 41,
        seed_test: int = 40,
        features: str = "xy",
        binary: bool = False,
        r_small: float = 0.1,
        r_big: float = 0.5,
        batch_size: int = 512,
        eval_batch_size: int = 4096,
        shuffle_seed: int = 0,
        exclude_classes: list[int] | tuple[int, ...] = (),
    ):
        super().__init__(batch_size, eval_batch_size, shuffle_seed, exclude_classes)
        check_choice(features, FEATURES, "data.features")
        seeds = {"train": seed_train, "val": seed_val, "test": seed_test}
        if len(set(seeds.values())) < 3:
            raise ConfigError(f"Yin-Yang splits need distinct seeds, got {seeds}")
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.seeds = seeds
        self.features, self.binary = features, binary
        self.r_small, self.r_big = r_small, r_big
        self.num_classes = 2 if binary else 3
        self.class_names = ("yin", "yang") if binary else ("yin", "yang", "dots")
        self.in_dim = 4 if features == "xy_mirror" else 2

    def _build(self):
        out = {}
        for split, n in self.sizes.items():
            if n <= 0:
                if split == "val":
                    continue
                raise ConfigError(f"data.n_{split} must be positive, got {n}")
            pts, labels = yinyang_sample(n, self.seeds[split], self.r_small, self.r_big, self.binary)
            out[split] = (yinyang_features(pts, self.features), torch.from_numpy(labels))
        return out
