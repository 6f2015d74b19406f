"""The Python standard library's source as a byte-level language-modelling dataset, a user's own
datamodule (kaelab never imports this file: ``data._target_: scripts.examples.pylm_data.PyStdlibDataModule``).

Corpus: the ``.py`` files under the running interpreter's stdlib (``sysconfig.get_paths()["stdlib"]``)
outside tests, IDLE, demos, generated tables and installed packages (``EXCLUDED_DIRS``), each at most
``max_file_bytes``; from these, files are taken in the order of a hash of their relative path until
``max_bytes`` (a spread over the whole library, not its alphabetically first packages). Each file
lands in exactly one split, chosen by another hash of its relative path (``split_of``), so held-out
files are code the model never read. A split is its files' bytes, concatenated in sorted path order.

Samples are windows of ``context`` bytes: ``x = s[p : p + T]``, ``y = s[p + 1 : p + T + 1]`` (the next
byte at every position), ``int64 [N, T]``; 256 classes (byte values). Training windows start every
``train_stride`` bytes; validation and test windows do not overlap.

``manifest()`` names the corpus ({"files", "sha256", "bytes": {split: n}}): the sha256 covers every
selected file's relative path and contents, in order, so two runs on the same selection agree on it.
"""

from __future__ import annotations

import hashlib
import platform
import sysconfig
from pathlib import Path
from typing import Any

import torch

from kaelab.data import TensorDataModule
from kaelab.errors import ConfigError
from kaelab.models.positions import IGNORE_INDEX

SPLITS = ("train", "val", "test")
# directories whose files are left out: tests, IDLE and demos, generated tables (encodings' charmaps,
# pydoc's topics), installed third-party packages, and the build's config directory (config-3.x-...)
EXCLUDED_DIRS = frozenset(
    {"test", "tests", "idltest", "idlelib", "turtledemo", "site-packages", "dist-packages", "encodings",
     "pydoc_data", "ensurepip", "lib2to3", "__pycache__", "__phello__"}
)  # fmt: skip


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def stdlib_root() -> Path:
    """The running interpreter's standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def candidate_files(root: Path, max_file_bytes: int) -> list[str]:
    """Relative POSIX paths of the ``.py`` files under ``root`` outside ``EXCLUDED_DIRS`` (and
    ``config-*``), named ``test_*`` nowhere, at most ``max_file_bytes`` each; sorted."""
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        dirs = rel.parts[:-1]
        if any(d in EXCLUDED_DIRS or d.startswith("config-") for d in dirs) or rel.name.startswith("test_"):
            continue
        if path.is_file() and path.stat().st_size <= max_file_bytes:
            out.append(rel.as_posix())
    return sorted(out)


def select_files(root: Path, max_bytes: int, max_file_bytes: int) -> list[str]:
    """The corpus's files (sorted): candidates taken in the order of ``sha256("select:" + path)``
    while the total stays within ``max_bytes``."""
    chosen, total = [], 0
    for rel in sorted(candidate_files(root, max_file_bytes), key=lambda r: _digest("select:" + r)):
        size = (root / rel).stat().st_size
        if total + size <= max_bytes:
            chosen.append(rel)
            total += size
    return sorted(chosen)


def split_of(rel: str, val_percent: int, test_percent: int) -> str:
    """The one split of a file: ``sha256("split:" + path)`` mod 100 below ``test_percent`` -> test,
    below ``test_percent + val_percent`` -> val, else train."""
    h = _digest("split:" + rel) % 100
    return "test" if h < test_percent else "val" if h < test_percent + val_percent else "train"


def windows(stream: torch.Tensor, context: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``, ``int64 [N, context]``: windows of ``stream`` starting every ``stride`` bytes, and
    the same windows shifted by one byte (the targets)."""
    n = (len(stream) - 1 - context) // stride + 1
    if n < 1:
        return torch.zeros(0, context, dtype=torch.long), torch.zeros(0, context, dtype=torch.long)
    idx = (torch.arange(n) * stride).unsqueeze(1) + torch.arange(context + 1)
    w = stream[idx].long()
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


class PyStdlibDataModule(TensorDataModule):
    """Byte windows of the stdlib's source (module docstring). ``limit``: the first ``limit``
    windows of each split (quick runs). ``exclude_targets`` (byte values; ``exclude_classes`` is
    kaelab's name for the same, which its retrain baseline sets): those target positions of the
    train and val windows become ``IGNORE_INDEX``, so a model trained on them never learns to
    predict those bytes; the test split keeps every target, to measure what it does predict."""

    num_classes = 256

    def __init__(
        self,
        root: str | None = None,
        context: int = 128,
        train_stride: int | None = None,
        max_bytes: int = 4_000_000,
        max_file_bytes: int = 200_000,
        val_percent: int = 5,
        test_percent: int = 5,
        limit: int | None = None,
        exclude_targets: list[int] | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        shuffle_seed: int = 0,
        exclude_classes: list[int] | tuple[int, ...] = (),
    ):
        excluded = sorted({int(c) for c in [*(exclude_targets or []), *exclude_classes]})
        super().__init__(batch_size, eval_batch_size, shuffle_seed, excluded)
        stride = context if train_stride is None else train_stride
        if context < 1 or stride < 1 or (limit is not None and limit < 1):
            raise ConfigError(f"data.context, data.train_stride and data.limit must be >= 1, got {context}, "
                              f"{stride}, {limit}")  # fmt: skip
        if min(val_percent, test_percent) < 1 or val_percent + test_percent >= 100:
            raise ConfigError(f"data.val_percent={val_percent} and data.test_percent={test_percent} must be >= 1 "
                              "and leave files for training")  # fmt: skip
        self.root = stdlib_root() if root is None else Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"data.root={str(self.root)!r} is not a directory")
        self.context, self.train_stride, self.limit = context, stride, limit
        self.max_bytes, self.max_file_bytes = max_bytes, max_file_bytes
        self.val_percent, self.test_percent = val_percent, test_percent
        self._files: list[tuple[str, str, int]] | None = None  # (split, path, bytes)
        self._sha256 = ""

    @property
    def in_dim(self) -> int:  # type: ignore[override]
        return self.context

    def files(self) -> list[tuple[str, str, int]]:
        """``(split, relative path, bytes)`` of every corpus file, sorted by path."""
        if self._files is None:
            digest, files = hashlib.sha256(), []
            for rel in select_files(self.root, self.max_bytes, self.max_file_bytes):
                data = (self.root / rel).read_bytes()
                digest.update(rel.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
                files.append((split_of(rel, self.val_percent, self.test_percent), rel, len(data)))
            if not files:
                raise ConfigError(f"data.root={str(self.root)!r} holds no .py file the corpus takes")
            self._files, self._sha256 = files, digest.hexdigest()
        return self._files

    def manifest(self) -> dict[str, Any]:
        """``{"files": n, "sha256": hex, "bytes": {split: n}, "python": version, "root": path}``."""
        files = self.files()
        per_split = {s: sum(n for split, _, n in files if split == s) for s in SPLITS}
        return {"files": len(files), "sha256": self._sha256, "bytes": per_split,
                "python": platform.python_version(), "root": str(self.root)}  # fmt: skip

    def stream(self, split: str) -> torch.Tensor:
        """A split's bytes (``uint8``): its files concatenated in sorted path order."""
        data = b"".join((self.root / rel).read_bytes() for s, rel, _ in self.files() if s == split)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)

    def _build(self) -> dict[str, tuple[torch.Tensor, ...]]:
        out = {}
        for split in SPLITS:
            x, y = windows(self.stream(split), self.context, self.train_stride if split == "train" else self.context)
            if self.limit is not None:
                x, y = x[: self.limit], y[: self.limit]
            if len(x) == 0:
                raise ConfigError(f"the {split} split has no window of {self.context + 1} bytes (data.max_bytes)")
            out[split] = (x, y)
        return out

    def _without_excluded(self, splits: dict[str, tuple[torch.Tensor, ...]]) -> dict[str, tuple[torch.Tensor, ...]]:
        """Mark the excluded targets of train and val as ``IGNORE_INDEX`` (every window stays: its
        other positions still train)."""
        bad = [c for c in self.exclude_classes if not 0 <= c < self.num_classes]
        if bad:
            raise ConfigError(f"data.exclude_targets={bad}: not byte values in [0, 256)")
        out = dict(splits)
        for split in ("train", "val"):
            x, y = out[split]
            out[split] = (x, y.masked_fill(torch.isin(y, torch.tensor(self.exclude_classes)), IGNORE_INDEX))
        return out
