"""Any map-style datasets (torchvision's, a user's own) as a kaelab datamodule.

Every stage reads its data through ``TensorDataModule.tensors(split)`` (representations, the KAE's
pairs, DMD, editing and topology all run on whole splits), so a datamodule built from a ``_target_``
config must hold its splits as tensors. ``DatasetDataModule`` reads datasets once, in order,
through a ``DataLoader`` (so each dataset's own ``transform`` and collate apply) and keeps the
stacked ``(inputs, labels)``; from then on it trains exactly like the built-in datamodules
(whole-batch slicing, epoch-seeded shuffling, ``exclude_classes``).

A config (``data=...``, e.g. ``scripts/examples/conf/data/mnist_torchvision.yaml``)::

    _target_: kaelab.data.DatasetDataModule
    train: {_target_: torchvision.datasets.MNIST, root: ..., train: true, transform: ...}
    test: {_target_: torchvision.datasets.MNIST, root: ..., train: false, transform: ...}
    val_size: 5000       # carved from train (or give ``val:`` a dataset)
    flatten: true        # [B, 1, 28, 28] -> [B, 784] for an MLP
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from kaelab.data.tensor_data import TensorDataModule
from kaelab.errors import ConfigError


def stack_dataset(
    dataset: Dataset, key: str, limit: int | None = None, batch_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, labels)`` of a map-style dataset of ``(input, label)`` items, in index order."""
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise ConfigError(
            f"data.{key} must be a map-style dataset (with __len__ and __getitem__), got {type(dataset).__name__}"
        )
    n = len(dataset) if limit is None else min(limit, len(dataset))  # type: ignore[arg-type]
    if n == 0:
        raise ConfigError(f"data.{key} is empty")
    first = dataset[0]
    if not isinstance(first, (list, tuple)) or len(first) < 2:
        raise ConfigError(f"data.{key} must yield (input, label) items, got {type(first).__name__}")
    if not torch.is_tensor(first[0]):
        raise ConfigError(f"data.{key} yields inputs of type {type(first[0]).__name__}: give it a transform to tensors")
    subset = dataset if n == len(dataset) else torch.utils.data.Subset(dataset, range(n))  # type: ignore[arg-type]
    xs, ys = [], []
    for batch in DataLoader(subset, batch_size=batch_size, shuffle=False):
        x, y = batch[0], torch.as_tensor(batch[1])
        xs.append(x.float())
        ys.append(y.long().reshape(-1))
    return torch.cat(xs), torch.cat(ys)


class DatasetDataModule(TensorDataModule):
    """Splits from datasets: ``train`` and ``test`` (required), ``val`` (a dataset, or ``val_size``
    samples carved from train with a permutation seeded by ``split_seed``; 0: no validation).

    ``num_classes`` defaults to the largest training label + 1; ``flatten`` reshapes each input to a
    vector; ``limit`` keeps the first ``limit`` samples of each dataset (quick runs)."""

    def __init__(
        self,
        train: Dataset,
        test: Dataset,
        val: Dataset | None = None,
        val_size: int = 0,
        split_seed: int = 0,
        num_classes: int | None = None,
        flatten: bool = False,
        limit: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 4096,
        shuffle_seed: int = 0,
        exclude_classes: list[int] | tuple[int, ...] = (),
    ):
        super().__init__(batch_size, eval_batch_size, shuffle_seed, exclude_classes)
        if val is not None and val_size:
            raise ConfigError("data.val and data.val_size are exclusive (a validation dataset, or a part of train)")
        if val_size < 0 or (limit is not None and limit < 1):
            raise ConfigError(f"data.val_size must be >= 0 and data.limit >= 1, got {val_size} and {limit}")
        self.datasets: dict[str, Any] = {"train": train, "val": val, "test": test}
        self.val_size, self.split_seed, self.flatten, self.limit = val_size, split_seed, flatten, limit
        self._num_classes = num_classes
        self._built: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    def _read(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if self._built is None:
            out = {k: stack_dataset(d, k, self.limit) for k, d in self.datasets.items() if d is not None}
            if self.val_size:
                x, y = out["train"]
                if self.val_size >= len(x):
                    raise ConfigError(f"data.val_size={self.val_size} leaves no training data (train has {len(x)})")
                order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
                val, train = order[: self.val_size], order[self.val_size :]
                out["train"], out["val"] = (x[train], y[train]), (x[val], y[val])
            if self.flatten:
                out = {k: (x.reshape(len(x), -1), y) for k, (x, y) in out.items()}
            self._built = out
        return self._built

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        if self._num_classes is None:
            self._num_classes = int(self._read()["train"][1].max()) + 1
        return self._num_classes

    @property
    def in_dim(self) -> int:  # type: ignore[override]
        return math.prod(self._read()["train"][0].shape[1:])

    def _build(self) -> dict[str, tuple[torch.Tensor, ...]]:
        out = self._read()
        for split, (_, y) in out.items():
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ConfigError(f"data.{split} has labels outside [0, {self.num_classes}) (data.num_classes)")
        return dict(out)
