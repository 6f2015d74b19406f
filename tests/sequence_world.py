"""A toy corpus and a tiny byte-level language model for the sequence tests (tests/test_sequence.py).

The corpus is a directory of small ``.py`` files that scripts/examples/pylm_data.py reads as it
reads the standard library (``data.root``). Each line is ``<letter> = <digit>\\n`` with the letter
drawn from a..j and the digit fixed by it (a -> 0, ..., j -> 9): after a letter the next bytes
`` = `` are certain, the digit is certain given the letter four positions back (a model must attend
to know it), the newline is certain, the next letter is not. So a tiny LM learns to predict digits
where they come next, and a forgotten digit class has something to forget.
"""

from __future__ import annotations

import random
from pathlib import Path

from conftest import FAST, REPO

SEARCH = f"hydra.searchpath=[file://{REPO / 'scripts' / 'examples' / 'conf'}]"
LETTERS = "abcdefghij"
DIGITS = [ord(c) for c in "0123456789"]


def line(letter: str) -> str:
    return f"{letter} = {LETTERS.index(letter)}\n"


def write_corpus(root: Path, n_files: int = 60, lines: int = 60, seed: int = 0) -> Path:
    """``n_files`` files of ``lines`` toy lines each under ``root`` (created); returns ``root``."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        text = "".join(line(rng.choice(LETTERS)) for _ in range(lines))
        (root / f"m{f:03d}.py").write_text(text)
    return root


def tiny(root: Path, epochs: int = 1) -> list[str]:
    """Overrides that shrink the pylm experiments to seconds on this toy corpus: a 2-block LM of
    width 32 over 16-byte windows, at most 400 windows per split, one thread."""
    return [
        SEARCH,
        f"data.root={root}",
        "data.max_bytes=1000000",
        "data.val_percent=10",
        "data.test_percent=20",
        "data.limit=400",
        "data.batch_size=32",
        "model.net.dim=32",
        "model.net.depth=2",
        "model.net.heads=2",
        "model.net.context=16",
        "model.net.mlp_ratio=2",
        f"model.epochs={epochs}",
        "trainer.precision=32-true",
        "trainer.num_threads=1",
        *FAST,
    ]
