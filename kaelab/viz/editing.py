"""Figure of an operator edit (KAE paper, Figure 4): the top-3 principal components of the
observable-space outputs K phi(x_i) before the edit and K' phi(x_i) after it, coloured by class.

Both panels use the principal axes of the outputs before the edit, so that a class that moved is
seen moving (the paper's 4 -> 9 merge).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from kaelab.viz.style import ClassPalette  # noqa: E402


def top_pcs(x: torch.Tensor, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, [d, k] top-k principal axes) of the rows of ``x``."""
    mean = x.double().mean(0)
    _, _, vh = torch.linalg.svd(x.double() - mean, full_matrices=False)
    return mean, vh[:k].T


def plot_edit_pcs(
    before: torch.Tensor,
    after: torch.Tensor,
    labels: torch.Tensor,
    forget: Sequence[int],
    path: Path,
    title: str,
    class_names: Sequence[str] | None = None,
) -> Path:
    """``class_names[c]`` (optional) labels class index c in the legend."""
    """Two 3-D scatter panels (before, after) of ``before``/``after`` [n, p] on the same axes."""
    mean, axes = top_pcs(before)
    pcs = [((x.double() - mean) @ axes).numpy() for x in (before, after)]
    labels = labels.numpy()
    palette = ClassPalette(labels, first=forget, names=class_names)
    classes = sorted(set(labels.tolist()))
    names = {c: palette.name(c) for c in classes}
    names.update({c: f"{names[c]} (forgotten)" for c in forget if c in names})
    fig = plt.figure(figsize=(11, 5.2))
    lims = [(min(p[:, j].min() for p in pcs), max(p[:, j].max() for p in pcs)) for j in range(3)]
    for panel, (pc, sub) in enumerate(zip(pcs, ("before the edit", "after the edit"), strict=True)):
        ax = fig.add_subplot(1, 2, panel + 1, projection="3d")
        # forgotten classes drawn last and larger, so their move is visible
        for c in sorted(classes, key=lambda c: c in forget):
            m = labels == c
            big = c in forget
            ax.scatter(
                *pc[m].T, s=6 if big else 2, alpha=0.9 if big else 0.35, color=palette.color(c), depthshade=False
            )
        ax.set(xlim=lims[0], ylim=lims[1], zlim=lims[2], xlabel="PC 1", ylabel="PC 2", zlabel="PC 3")
        ax.set_title(f"observable-space outputs {sub}", fontsize=10)
        ax.tick_params(labelsize=6)
    shown = [c for c in classes if c in palette.shown]
    handles = [Line2D([], [], ls="", marker="o", color=palette.color(c), label=names[c]) for c in shown]
    if palette.many:
        handles.append(Line2D([], [], ls="", marker="o", color=palette.legend()[-1][1], label=palette.legend()[-1][0]))
    fig.legend(handles=handles, loc="center right", title="class", fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.02, right=0.83, wspace=0.08)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
