"""Shared figure style: one colour per class index, the same in every kaelab figure.

A figure tells at most ten classes apart by colour (tab10). With more classes (a language model's
256 next-byte classes) ``ClassPalette`` colours ten of them, the ones a figure asks for first (the
forgotten classes of an edit) and then the most frequent, and draws the rest grey as "other";
the legend says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
from matplotlib import colormaps  # noqa: E402

MAX_COLOURS = 10  # tab10
OTHER = (0.72, 0.72, 0.72, 1.0)  # grey: the classes a many-class figure does not tell apart


def class_color(c: int):
    """Colour of class ``c`` (tab10, cycling past 10 classes)."""
    return colormaps["tab10"](int(c) % 10)


def class_colors(labels) -> list:
    return [class_color(int(c)) for c in labels]


class ClassPalette:
    """Colours and legend of the classes in ``labels``: class c is tab10 colour c (as
    ``class_color``) when there are at most ten; else the classes in ``first`` and then the most
    frequent get the ten colours in that order, and every other class is grey "other".
    ``names[c]`` (optional) names class c in the legend, after its index (``numbered``) or alone.

    Examples:
        >>> p = ClassPalette([0, 1, 1, 2])
        >>> p.color(1) == class_color(1), [name for name, _ in p.legend()]
        (True, ['0', '1', '2'])
        >>> many = ClassPalette(list(range(30)) + [7] * 5, first=[3])
        >>> many.shown[:2], many.color(29) == OTHER
        ([3, 7], True)
    """

    def __init__(self, labels, first: Sequence[int] = (), names: Sequence[str] | None = None, numbered: bool = True):
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        classes, counts = np.unique(labels, return_counts=True)
        self.names, self.numbered = names, numbered
        self.many = len(classes) > MAX_COLOURS
        if not self.many:
            self.shown = [int(c) for c in classes]
            self._colour = {c: class_color(c) for c in self.shown}
            return
        by_count = [int(c) for c in classes[np.argsort(-counts, kind="stable")]]
        present = set(by_count)
        ordered = [int(c) for c in first if int(c) in present] + [c for c in by_count if c not in set(first)]
        self.shown = ordered[:MAX_COLOURS]
        # tab10's own grey (its 8th colour) would pass for "other": black in its place
        palette = [colormaps["tab10"](i) if i != 7 else (0.0, 0.0, 0.0, 1.0) for i in range(MAX_COLOURS)]
        self._colour = {c: palette[i] for i, c in enumerate(self.shown)}
        self.n_other = len(classes) - len(self.shown)

    def name(self, c: int) -> str:
        if not self.names:
            return str(c)
        return f"{c} {self.names[c]}" if self.numbered else str(self.names[c])

    def color(self, c: int):
        return self._colour.get(int(c), OTHER)

    def colors(self, labels) -> list:
        return [self.color(int(c)) for c in np.asarray(labels).reshape(-1)]

    def legend(self) -> list[tuple[str, tuple]]:
        """(name, colour) of each legend entry: the coloured classes, then "other" when some are grey."""
        entries = [(self.name(c), self._colour[c]) for c in self.shown]
        if self.many:
            entries.append((f"other ({self.n_other} classes)", OTHER))
        return entries


def save_figure(fig, path):
    """Lay out, write (creating the directory) and close ``fig``; returns ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
