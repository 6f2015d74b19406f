"""In-memory tensor datasets with whole-batch indexing and epoch-seeded shuffling.

Why not ``DataLoader(TensorDataset, batch_size=B, shuffle=True)``: that indexes one sample at a
time and collates, which for an MLP on the CPU costs as much as the model's step. Here the sampler
yields whole index batches and ``TensorDataset[idx]`` gathers them in one op.

The permutation of epoch ``e`` depends only on ``(seed, e)`` (Lightning calls ``set_epoch`` on a
loader's sampler every epoch), so a run resumed from a checkpoint sees exactly the batches that an
uninterrupted run sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from kaelab.errors import ConfigError


class ShuffledBatches(Sampler[torch.Tensor]):
    """Yields index batches of a fresh permutation per epoch, seeded by ``seed + epoch``."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        drop_singleton: bool = False,
    ):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.shuffle, self.seed, self.drop_last = n, batch_size, shuffle, seed, drop_last
        # a last batch of one sample cannot train BatchNorm (its batch variance is undefined): with
        # drop_singleton it is dropped (e.g. 49,577 MNIST images without one class at batch 128)
        if drop_singleton and n > 1 and n % batch_size == 1:
            self.drop_last = True
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        for i in range(len(self)):
            yield order[i * self.batch_size : (i + 1) * self.batch_size]


def batch_loader(
    dataset: TensorDataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    drop_last: bool = False,
    drop_singleton: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over an in-memory TensorDataset that gathers whole batches at once (into pinned
    memory with ``pin_memory``, for asynchronous copies to a GPU)."""
    n = len(dataset)
    bs = min(batch_size, n)
    sampler = ShuffledBatches(n, bs, shuffle=shuffle, seed=seed, drop_last=drop_last, drop_singleton=drop_singleton)
    return DataLoader(dataset, sampler=sampler, batch_size=None, pin_memory=pin_memory)


class TensorBatches:
    """The batches of ``sampler`` sliced straight from in-memory tensors: what a ``DataLoader`` over
    the same sampler yields (``batch_loader``), without a DataLoader's per-batch iterator, profiler
    and fetcher machinery, which cost about a tenth of a Yin-Yang training step (``make bench``:
    ``resmlp_yinyang/framework_overhead``). Lightning accepts any sized iterable, and calls
    ``set_epoch`` on its ``sampler`` every epoch as it does on a DataLoader's."""

    def __init__(self, tensors: Sequence[torch.Tensor], sampler: ShuffledBatches, pin_memory: bool = False):
        self.tensors, self.sampler, self.pin_memory = tuple(tensors), sampler, pin_memory

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for idx in self.sampler:
            yield tuple(gather(t, idx, self.pin_memory) for t in self.tensors)


def gather(t: torch.Tensor, idx: torch.Tensor, pin_memory: bool = False) -> torch.Tensor:
    """``t[idx]`` (rows), gathered straight into page-locked memory with ``pin_memory``, so that
    the copy to a GPU can run asynchronously (``non_blocking``) while the previous step computes;
    a pageable batch would make that copy synchronous. PyTorch caches pinned allocations, so one
    per batch costs no new page locking once warm."""
    if not pin_memory:
        return t[idx]
    out = torch.empty((len(idx), *t.shape[1:]), dtype=t.dtype, pin_memory=True)
    return torch.index_select(t, 0, idx, out=out)


def wants_pinned_memory(trainer: Any) -> bool:
    """Whether batches should be gathered into pinned memory: training runs on a CUDA device."""
    device = getattr(getattr(trainer, "strategy", None), "root_device", None)
    return device is not None and device.type == "cuda" and torch.cuda.is_available()


class TensorDataModule(L.LightningDataModule):
    """Base for datamodules whose splits are tensors built once in ``setup``.

    Subclasses implement ``_build() -> dict(split -> (x, y))`` for splits ``train``, ``val``
    (may be absent) and ``test``.
    """

    num_classes: int
    in_dim: int

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int = 4096,
        shuffle_seed: int = 0,
        exclude_classes: Sequence[int] = (),
    ):
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.shuffle_seed = shuffle_seed
        self.exclude_classes = sorted({int(c) for c in exclude_classes})
        self.splits: dict[str, TensorDataset] = {}

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # batches sliced from in-memory tensors are already where training runs on the CPU: skip
        # Lightning's walk of the collection (6 us of a 5 ms Yin-Yang step); anything else, e.g. a
        # GPU run, goes the default way. (Here, not in the LightningModule: Lightning warns when a
        # module overrides this hook and a datamodule is given.)
        if isinstance(batch, tuple) and all(isinstance(t, torch.Tensor) for t in batch):
            if all(t.device == device for t in batch):
                return batch
            # asynchronous from pinned memory (``gather``), a plain copy from pageable memory
            return tuple(t.to(device, non_blocking=True) for t in batch)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _build(self) -> dict[str, tuple[torch.Tensor, ...]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            built = self._build()
            if self.exclude_classes:
                built = self._without_excluded(built)
            self.splits = {k: TensorDataset(*tensors) for k, tensors in built.items()}

    def _without_excluded(self, splits: dict[str, tuple[torch.Tensor, ...]]) -> dict[str, tuple[torch.Tensor, ...]]:
        """Drop ``exclude_classes`` from the train and val splits (the retrain-without-the-forgotten-
        classes baseline of unlearning); the test split keeps every class, so the retrained model's
        accuracy on the excluded classes can be measured. Labels keep their original indices."""
        bad = [c for c in self.exclude_classes if not 0 <= c < self.num_classes]
        if bad:
            raise ConfigError(f"data.exclude_classes={bad} out of range for {self.num_classes} classes")
        if len(self.exclude_classes) >= self.num_classes:
            raise ConfigError(f"data.exclude_classes={self.exclude_classes} would leave no class to train on")
        out = dict(splits)
        for split in ("train", "val"):
            if split in out:
                x, y, *rest = out[split]
                keep = ~torch.isin(y, torch.tensor(self.exclude_classes, dtype=y.dtype))
                out[split] = (x[keep], y[keep], *(t[keep] for t in rest))
        return out

    def tensors(self, split: str) -> tuple[torch.Tensor, ...]:
        """The tensors of a split, e.g. (inputs, labels) for representation extraction."""
        self.setup()
        if split not in self.splits:
            raise KeyError(f"split {split!r} not available; have {sorted(self.splits)}")
        return self.splits[split].tensors  # type: ignore[return-value]

    def train_dataloader(self) -> DataLoader | TensorBatches:
        trainer = getattr(self, "trainer", None)
        pin = wants_pinned_memory(trainer)
        loader = batch_loader(
            self.splits["train"],
            self.batch_size,
            shuffle=True,
            seed=self.shuffle_seed,
            drop_singleton=True,
            pin_memory=pin,
        )
        if trainer is not None and trainer.world_size > 1:
            return loader  # a DataLoader, whose sampler Lightning shards over the DDP ranks
        return TensorBatches(self.splits["train"].tensors, loader.sampler, pin_memory=pin)

    def val_dataloader(self):
        if "val" not in self.splits:
            return []
        pin = wants_pinned_memory(getattr(self, "trainer", None))
        return batch_loader(self.splits["val"], self.eval_batch_size, shuffle=False, pin_memory=pin)

    def test_dataloader(self) -> DataLoader:
        pin = wants_pinned_memory(getattr(self, "trainer", None))
        return batch_loader(self.splits["test"], self.eval_batch_size, shuffle=False, pin_memory=pin)

    def loader(self, split: str, batch_size: int | None = None) -> DataLoader:
        """An unshuffled loader over any split (for evaluation and extraction)."""
        self.setup()
        return batch_loader(self.splits[split], batch_size or self.eval_batch_size, shuffle=False)


class InMemoryDataModule(TensorDataModule):
    """A datamodule over prebuilt split tensors, e.g. the KAE's (x_i, x_j) pairs."""

    def __init__(
        self,
        splits: dict[str, tuple[torch.Tensor, ...]],
        batch_size: int,
        eval_batch_size: int = 4096,
        shuffle_seed: int = 0,
    ):
        super().__init__(batch_size, eval_batch_size, shuffle_seed)
        self._splits = splits

    def _build(self):
        return self._splits
