"""Shared figure style: one colour per class index, the same in every kaelab figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
from matplotlib import colormaps  # noqa: E402


def class_color(c: int):
    """Colour of class ``c`` (tab10, cycling past 10 classes)."""
    return colormaps["tab10"](int(c) % 10)


def class_colors(labels) -> list:
    return [class_color(int(c)) for c in labels]


def save_figure(fig, path):
    """Lay out, write (creating the directory) and close ``fig``; returns ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
