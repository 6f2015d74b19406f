"""MNIST through ``torchvision.datasets.MNIST``, normalised once and held in memory as tensors."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from kaelab.data.augment import random_translate
from kaelab.data.tensor_data import TensorDataModule
from kaelab.errors import ConfigError, DataNotFoundError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
DATA_ENV = "KAELAB_DATA_DIR"


def load_mnist(root: str | os.PathLike, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw MNIST as (uint8 images [n, 28, 28], int64 labels) from ``root/MNIST/raw``."""
    from torchvision.datasets import MNIST

    root = Path(root).expanduser()
    raw = root / "MNIST" / "raw"
    try:
        ds = MNIST(str(root), train=train, download=download)
    except (RuntimeError, OSError) as err:  # torchvision raises RuntimeError for missing / failed download
        how = (
            f"MNIST not found under {raw} and download failed ({str(err).splitlines()[0]}). "
            if download
            else f"MNIST not found under {raw} (download disabled). "
        )
        raise DataNotFoundError(
            how + "Put the four idx files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte) in {raw}, or point data.root / "
            f"${DATA_ENV} at a directory that has MNIST/raw/, or run with internet and data.download=true."
        ) from None
    return ds.data, ds.targets


def normalise(images: torch.Tensor) -> torch.Tensor:
    """ToTensor + Normalize(0.1307, 0.3081), flattened to 784 features, done once for the split."""
    return ((images.float().div_(255.0) - MNIST_MEAN) / MNIST_STD).reshape(len(images), -1)


class MNISTDataModule(TensorDataModule):
    """60k training images split into train / val (``val_size``, fixed ``split_seed``); 10k test."""

    num_classes = 10
    in_dim = 784

    def __init__(
        self,
        root: str = "data",
        download: bool = True,
        val_size: int = 5000,
        split_seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 4096,
        shuffle_seed: int = 0,
        augment_shift: int = 0,
        exclude_classes: list[int] | tuple[int, ...] = (),
    ):
        super().__init__(batch_size, eval_batch_size, shuffle_seed, exclude_classes)
        self.augment_shift = augment_shift
        if not 0 <= val_size < 60000:
            raise ConfigError(f"data.val_size must be in [0, 60000), got {val_size}")
        self.root, self.download = root, download
        self.val_size, self.split_seed = val_size, split_seed

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Random translations of training batches (``augment_shift`` pixels, 0 = off).

        The offsets are drawn from a generator seeded by (shuffle_seed, global step), so a resumed
        run sees exactly the augmentations of an uninterrupted one.
        """
        trainer = self.trainer
        if self.augment_shift and trainer is not None and trainer.training:
            x, y = batch
            g = torch.Generator().manual_seed(self.shuffle_seed * 1_000_003 + trainer.global_step)
            background = (0.0 - MNIST_MEAN) / MNIST_STD
            batch = (random_translate(x, 28, self.augment_shift, g, fill=background), y)
        return batch

    def prepare_data(self) -> None:
        load_mnist(self.root, train=True, download=self.download)
        load_mnist(self.root, train=False, download=self.download)

    def _build(self):
        x, y = load_mnist(self.root, train=True, download=self.download)
        xt, yt = load_mnist(self.root, train=False, download=self.download)
        x = normalise(x)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size :]
        out = {"train": (x[train_idx], y[train_idx]), "test": (normalise(xt), yt)}
        if self.val_size:
            out["val"] = (x[val_idx], y[val_idx])
        return out
