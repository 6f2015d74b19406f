"""The KAE's picture of the network (KAE paper, Figure 3, bottom): the source layer x_i, a few of
the KAE's decoded intermediate steps and the target layer x_j, in ONE principal-component view.

The view is the top-2 principal components of x_j (the preprocessed target layer, centred on its
own mean), and every panel is projected onto those same axes with the same limits: a panel moves
only because its points move, never because its axes were refitted. Class colours are
``kaelab.viz.style.ClassPalette``'s (the same in every kaelab figure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from kaelab.viz.style import ClassPalette  # noqa: E402


class SharedPCA:
    """Top-``n`` principal axes of one cloud (``fit``), applied to any cloud of the same width
    (``transform``: centred on the fitted cloud's mean, not the new cloud's). Signs fixed: each axis's
    largest loading is positive, so the picture does not flip between runs."""

    def __init__(self, n: int = 2) -> None:
        self.n = n

    def fit(self, x: torch.Tensor) -> SharedPCA:
        x = torch.as_tensor(x).double()
        self.mean_ = x.mean(0)
        _, _, vh = torch.linalg.svd(x - self.mean_, full_matrices=False)
        v = vh[: self.n].T
        self.axes_ = v * torch.sign(v.gather(0, v.abs().argmax(0, keepdim=True)))
        return self

    def transform(self, x: torch.Tensor) -> np.ndarray:
        pcs = ((torch.as_tensor(x).double() - self.mean_) @ self.axes_).numpy()
        return np.pad(pcs, ((0, 0), (0, self.n - pcs.shape[1]))) if pcs.shape[1] < self.n else pcs


def picked_steps(k: int, n_steps: int) -> list[int]:
    """``n_steps`` KAE steps evenly spread over 0..k, both ends included."""
    return sorted({int(round(t)) for t in np.linspace(0, k, max(2, min(n_steps, k + 1)))})


def subsample(n: int, n_points: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``min(n, n_points)`` points drawn without replacement (seeded)."""
    if n <= n_points:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_points].sort().values


def kae_picture_panels(art: Any, data: Any, n_points: int = 2000, n_steps: int = 4, seed: int = 0):
    """(panels {title: cloud [n, d]}, labels) of the test split: x_i, the decoded steps
    ``phi^-1(A^t phi(x_i))`` (Eq. 12) at ``picked_steps`` and x_j, all preprocessed (Eqs. 8-11).
    ``art``: a KAE artifact (``.model``, ``.prep``, ``.source``, ``.target``); ``data``: its
    representations (``.reps``, ``.labels``)."""
    idx = subsample(len(data.labels["test"]), n_points, seed)
    test = data.reps["test"]
    x_i, x_j = art.prep.transform(test[art.source][idx], test[art.target][idx])
    k = art.model.module_.koopman.k
    steps = picked_steps(k, n_steps)
    decoded = art.model.decoded_steps(x_i, steps)
    panels = {f"x_i: {art.source}": x_i}
    panels.update({f"KAE step {t}/{k}": d for t, d in zip(steps, decoded, strict=True)})
    panels[f"x_j: {art.target}"] = x_j
    return panels, data.labels["test"][idx]


def plot_shared_pca(panels: dict[str, torch.Tensor], labels, fit_on: str, path: Path, title: str) -> Path:
    """One row of scatter panels in the principal-component view of ``panels[fit_on]`` (same axes
    and limits in every panel), coloured by class, with one class legend."""
    pca = SharedPCA(2).fit(panels[fit_on])
    pcs = {name: pca.transform(cloud) for name, cloud in panels.items()}
    every = np.concatenate(list(pcs.values()))
    lo, hi = np.percentile(every, 0.5, axis=0), np.percentile(every, 99.5, axis=0)
    pad = 0.06 * (hi - lo) + 1e-9
    labels = np.asarray(labels)
    palette = ClassPalette(labels)
    colors = palette.colors(labels)
    fig, axes = plt.subplots(1, len(pcs), figsize=(2.1 * len(pcs) + 0.7, 2.6), squeeze=False, sharex=True, sharey=True)
    for ax, (name, xy) in zip(axes[0], pcs.items(), strict=True):
        ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=4, alpha=0.7, linewidths=0, rasterized=True)
        ax.set_title(name, fontsize=10)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_xlabel("PC1", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("PC2", fontsize=8)
    handles = [Line2D([], [], ls="", marker="o", ms=5, color=colour, label=name) for name, colour in palette.legend()]
    fig.legend(handles=handles, title="class", loc="center right", fontsize=8, title_fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 0.7 / fig.get_figwidth(), 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_kae_picture(art: Any, data: Any, path: Path, name: str, n_points: int = 2000, n_steps: int = 4) -> Path:
    """The KAE's picture of the network as a PNG at ``path`` (Figure 3, bottom): x_i, ``n_steps``
    decoded KAE steps and x_j of ``n_points`` test points in the principal-component view of x_j."""
    panels, labels = kae_picture_panels(art, data, n_points, n_steps)
    n = len(labels)
    title = (
        f"{name}: the KAE's picture of the network (test split, {n} points; PCA fitted on x_j, shared by all panels)"
    )
    return plot_shared_pca(panels, labels, f"x_j: {art.target}", Path(path), title)
