"""Figures of the topology stage (KAE paper, Figures 2, 3, B1, B2), as PNG files.

* top-3 principal components of point clouds (each layer's representation, the KAE's decoded
  steps, a representation in state and observable space), coloured by class;
* Betti curves (beta_0, beta_1 against eps), several clouds overlaid;
* beta_0 against layer and against KAE step.

Colours: class c is always ``tab10`` colour c, in every figure; with more than ten classes the ten
most frequent are coloured and the rest drawn grey as "other" (kaelab.viz.style.ClassPalette).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from kaelab.viz.style import ClassPalette  # noqa: E402

CLASS_CMAP = plt.get_cmap("tab10")


def class_colors(labels) -> np.ndarray:
    """RGBA colour of each label: tab10 by class index."""
    return CLASS_CMAP(np.asarray(labels, dtype=np.int64) % 10)


def class_legend(ax, labels, class_names: Sequence[str] | None = None, **kw) -> None:
    """The legend of ``labels``' classes (``ClassPalette``: named by ``class_names``, at most ten
    coloured, the rest one grey "other" entry)."""
    entries = ClassPalette(labels, names=class_names, numbered=False).legend()
    handles = [Line2D([], [], ls="", marker="o", ms=6, color=colour, label=name) for name, colour in entries]
    ax.legend(handles=handles, **{"title": "class", **kw})


def pca3(x) -> np.ndarray:
    """Top-3 principal components [n, 3] of a cloud (centred; signs fixed: largest loading > 0)."""
    x = torch.as_tensor(x).double()
    x = x - x.mean(0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    v = vh[:3].T
    v = v * torch.sign(v.gather(0, v.abs().argmax(0, keepdim=True)))
    pcs = (x @ v).numpy()
    if pcs.shape[1] < 3:
        pcs = np.pad(pcs, ((0, 0), (0, 3 - pcs.shape[1])))
    return pcs


def plot_pca_panels(
    panels: dict[str, object],
    labels,
    path: Path,
    title: str,
    ncols: int | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """One 3-D scatter of the top-3 PCs per panel (title -> cloud [n, d], rows matching ``labels``)."""
    n = len(panels)
    ncols = ncols or min(n, 4 if n > 6 else 3 if n > 4 else n)
    nrows = math.ceil(n / ncols)
    fig = plt.figure(figsize=(3.6 * ncols, 3.4 * nrows + 1.2))
    legend_h = 0.6 / fig.get_figheight()  # 0.6 in for the class legend, 0.6 in for the title
    palette = ClassPalette(labels, names=class_names, numbered=False)
    colors = palette.colors(labels)
    for idx, (name, cloud) in enumerate(panels.items()):
        ax = fig.add_subplot(nrows, ncols, idx + 1, projection="3d")
        pcs = pca3(cloud)
        ax.scatter(pcs[:, 0], pcs[:, 1], pcs[:, 2], c=colors, s=2, alpha=0.7, linewidths=0, depthshade=False)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("PC1", fontsize=7, labelpad=-12)
        ax.set_ylabel("PC2", fontsize=7, labelpad=-12)
        ax.set_zlabel("PC3", fontsize=7, labelpad=-12)
        ax.set_xticklabels([])
        ax.set_yticklabels([])
        ax.set_zticklabels([])
        ax.view_init(elev=20, azim=-60)
    fig.suptitle(title, fontsize=12)
    handles_ax = fig.add_axes((0.0, 0.0, 1.0, legend_h))
    handles_ax.axis("off")
    class_legend(
        handles_ax,
        labels,
        class_names,
        loc="center",
        ncol=min(len(palette.legend()), 11),
        fontsize=8,
        frameon=False,
        title="class",
    )
    top = 1 - 0.6 / fig.get_figheight()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=legend_h, top=top, wspace=0.02, hspace=0.12)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_betti_curves(
    eps: np.ndarray,
    curves: dict[str, dict[int, np.ndarray]],
    path: Path,
    title: str,
    styles: dict[str, dict] | None = None,
    log_beta0: bool = True,
) -> Path:
    """beta_k(eps) for each labelled cloud, one panel per k (Figure 2B)."""
    dims = sorted({k for c in curves.values() for k in c})
    fig, axes = plt.subplots(1, len(dims), figsize=(5.2 * len(dims), 4.0), squeeze=False)
    for ax, k in zip(axes[0], dims, strict=True):
        for label, c in curves.items():
            if k in c:
                ax.plot(eps, c[k], label=label, **(styles or {}).get(label, {"lw": 1.5}))
        ax.set(xlabel="filtration value eps (Rips edge length)", ylabel=f"beta_{k}", title=f"beta_{k}(eps)")
        if k == 0 and log_beta0 and max(float(np.max(c[0])) for c in curves.values() if 0 in c) > 20:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_beta0_depth(
    path: Path,
    layer_names: Sequence[str] | None = None,
    layer_beta0: Sequence[int] | None = None,
    layer_eps: float | None = None,
    step_beta0: Sequence[int] | None = None,
    step_eps: float | None = None,
    n_points: int | None = None,
    reference: dict[str, Sequence[float]] | None = None,
    step_reference: dict[str, Sequence[float]] | None = None,
) -> Path:
    """beta_0 against layer (left) and against KAE step (right): Figure 3, top. ``reference`` /
    ``step_reference``: extra labelled series (e.g. published numbers, or another eps)."""
    panels = [p for p in ("layers", "steps") if (layer_beta0 if p == "layers" else step_beta0) is not None]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.2), squeeze=False)
    pts = f", {n_points} points" if n_points else ""
    styles = [dict(marker="s", ls="--", c="tab:gray", ms=4), dict(marker="^", ls=":", c="tab:blue", ms=4)]
    for ax, panel in zip(axes[0], panels, strict=True):
        main = layer_beta0 if panel == "layers" else step_beta0
        extra = (reference if panel == "layers" else step_reference) or {}
        x = np.arange(len(main))
        eps = layer_eps if panel == "layers" else step_eps
        color = "k" if panel == "layers" else "tab:red"
        ax.plot(x, main, "o-", c=color, ms=5 if panel == "layers" else 3, label=f"kaelab, eps={eps:g}")
        if panel == "layers":
            for j, v in enumerate(main):
                ax.annotate(str(v), (j, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        for i, (label, series) in enumerate(extra.items()):
            style = styles[i % len(styles)]
            ax.plot(np.arange(len(series)), series, label=label, **style)
            if panel == "layers":
                for j, v in enumerate(series):
                    ax.annotate(
                        str(v), (j, v), textcoords="offset points", xytext=(8, -10), fontsize=7, color=style["c"]
                    )
        if panel == "layers":
            ax.set_xticks(x, [f"L{j}\n{n}" for j, n in enumerate(layer_names or x)], fontsize=7)
            ax.set(xlabel="layer", ylabel="beta_0", title=f"beta_0 through depth{pts}")
        else:
            ax.set(xlabel="KAE step t (decoded state)", ylabel="beta_0", title=f"beta_0 of the KAE's steps{pts}")
        values = np.concatenate([np.asarray(main, dtype=float)] + [np.asarray(v, dtype=float) for v in extra.values()])
        if values.max() / max(values.min(), 1) > 20:  # log scale only when the counts span decades
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
