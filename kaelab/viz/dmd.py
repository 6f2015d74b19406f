"""Figures of the DMD layer-replacement study (Koopman layers paper, Figs. 3-5), as PNG files.

* DMD eigenvalues against the unit circle;
* normalised singular value spectra of the snapshot matrix without delays (h = 0) and with them;
* for Yin-Yang, the decision boundary over [0, 1]^2 of the original and the hybrid network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def plot_eigenvalues(eigs: np.ndarray, path: Path, title: str = "DMD eigenvalues") -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    theta = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(theta), np.sin(theta), "k--", lw=0.8, label="unit circle")
    ax.scatter(eigs.real, eigs.imag, s=18, c="tab:red", alpha=0.8, label=f"{len(eigs)} eigenvalues")
    lim = max(1.1, float(np.abs(eigs).max()) * 1.1 if len(eigs) else 1.1)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="Re", ylabel="Im", title=title, aspect="equal")
    ax.axhline(0, c="grey", lw=0.4)
    ax.axvline(0, c="grey", lw=0.4)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_singular_values(spectra: dict[str, np.ndarray], path: Path, rank: int | None = None) -> Path:
    """Singular values normalised by the largest, one curve per label (e.g. ``h=0`` vs ``h=3``)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, s in spectra.items():
        s = np.asarray(s)
        ax.semilogy(np.arange(1, len(s) + 1), s / s[0], marker=".", ms=3, lw=1, label=label)
    if rank:
        ax.axvline(rank, c="k", ls=":", lw=1, label=f"rank {rank}")
    ax.set(xlabel="index", ylabel="sigma_i / sigma_1", title="Singular values of the snapshot matrix")
    floor = min(float(np.min(np.asarray(s)[np.asarray(s) > 0] / np.asarray(s)[0])) for s in spectra.values())
    ax.set_ylim(bottom=max(1e-8, floor / 2))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_decision_boundaries(
    models: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    features: Callable[[np.ndarray], torch.Tensor],
    path: Path,
    resolution: int = 200,
    points: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Predicted class over [0, 1]^2 for each model, side by side (optionally with labelled points)."""
    g = np.linspace(0.0, 1.0, resolution)
    xx, yy = np.meshgrid(g, g)
    grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
    inputs = features(grid)
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4.2), squeeze=False)
    for ax, (title, model) in zip(axes[0], models.items(), strict=True):
        pred = model(inputs).argmax(1).reshape(resolution, resolution).numpy()
        ax.contourf(xx, yy, pred, levels=np.arange(pred.max() + 2) - 0.5, cmap="coolwarm", alpha=0.6)
        if points is not None:
            xy, labels = points
            ax.scatter(xy[:, 0], xy[:, 1], c=labels, s=3, cmap="coolwarm", edgecolors="none")
        ax.set(title=title, xlim=(0, 1), ylim=(0, 1), aspect="equal", xlabel="x", ylabel="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_images(loggers: Sequence, images: dict[str, Path], step: int = 0) -> None:
    """Send PNGs to the loggers that take images (TensorBoard, W&B); the CSV logger takes none."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for lg in loggers:
        for name, path in images.items():
            if isinstance(lg, TensorBoardLogger):
                img = plt.imread(str(path))
                lg.experiment.add_image(name, img[..., :3], step, dataformats="HWC")
            elif isinstance(lg, WandbLogger):
                lg.log_image(key=name, images=[str(path)], step=step)
