"""Figures of the KAE operator's spectrum (kaelab.koopman.spectrum): eigenvalues of K and of the
one-step A against the unit circle, and the class x mode energy heatmap."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kaelab.viz.style import save_figure  # noqa: E402


def plot_operator_eigenvalues(eig_K: np.ndarray, eig_A: np.ndarray, k: int, path: Path, title: str) -> Path:
    """Two panels: eigenvalues of K = exp(G) and of A = exp(G/k), each with the unit circle; A's
    eigenvalues cluster near 1 for large k, so its panel is zoomed onto them."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    theta = np.linspace(0, 2 * np.pi, 400)
    for ax, eig, name, color in zip(
        axes, (eig_K, eig_A), ("K = exp(G)", f"A = exp(G/{k}) (one step; zoomed)"), ("tab:red", "tab:blue"), strict=True
    ):
        outside = int((np.abs(eig) > 1 + 1e-9).sum())
        ax.plot(np.cos(theta), np.sin(theta), "k--", lw=0.8, label="unit circle")
        ax.scatter(eig.real, eig.imag, s=10, c=color, alpha=0.7, label=f"{len(eig)} eigenvalues ({outside} outside)")
        if eig is eig_A:  # zoom: a square window around the eigenvalues and the point 1
            lo, hi = min(eig.real.min(), 1.0), max(eig.real.max(), 1.0)
            half = 0.6 * max(hi - lo, 2 * np.abs(eig.imag).max(), 1e-3)
            mid = (lo + hi) / 2
            ax.set(xlim=(mid - half, mid + half), ylim=(-half, half), xlabel="Re", ylabel="Im", aspect="equal")
        else:
            lim = max(1.1, float(np.abs(eig).max()) * 1.1)
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="Re", ylabel="Im", aspect="equal")
        ax.set_title(f"eigenvalues of {name}, radius {np.abs(eig).max():.3g}", fontsize=10)
        ax.axhline(0, c="grey", lw=0.4)
        ax.axvline(0, c="grey", lw=0.4)
        ax.legend(loc="upper right", fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_class_mode_energy(
    energy: np.ndarray,
    modes: Sequence[int],
    eig_K: np.ndarray,
    path: Path,
    title: str,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Heatmap of ``energy`` [C, len(modes)] (share of each class's mean observable per mode)."""
    n_cls = energy.shape[0]
    fig, ax = plt.subplots(figsize=(min(16, 5 + 0.28 * len(modes)), 1.6 + 0.38 * n_cls))
    im = ax.imshow(energy, aspect="auto", cmap="viridis", vmin=0)
    ax.set_xticks(range(len(modes)), [f"{m}\n|{abs(eig_K[m]):.2f}|" for m in modes], fontsize=6)
    names = [f"{c} {class_names[c]}" if class_names else str(c) for c in range(n_cls)]
    ax.set_yticks(range(n_cls), names, fontsize=8)
    ax.set(xlabel="mode (index, |eigenvalue of K|)", ylabel="class")
    fig.colorbar(im, ax=ax, label="share of class mean")
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)
