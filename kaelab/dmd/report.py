"""What the DMD stage writes besides its metrics: the grid table and the figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kaelab.dmd.delay import paired_snapshots
from kaelab.dmd.operator import singular_values
from kaelab.dmd.study import accuracy
from kaelab.fileio import write_csv


def write_grid(path: Path, results: list) -> None:
    """One CSV row per grid point (the union of the rows' columns)."""
    fields = list(dict.fromkeys(k for r in results for k in r.row))
    write_csv(path, fields, ([r.row.get(k, "") for k in fields] for r in results))


def figures(out_dir: Path, best, S_train, net, datamodule, test, boundary_resolution: int) -> dict[str, Path]:
    """The reported point's eigenvalues, singular values with and without delays and, on
    Yin-Yang, the decision boundaries of the original and the hybrid network."""
    from kaelab.viz.dmd import plot_decision_boundaries, plot_eigenvalues, plot_singular_values

    a, b = best.point.span
    h, op = best.point.h, best.fit.operator
    images = {
        "dmd/eigenvalues": plot_eigenvalues(
            op.eigs, out_dir / "dmd_eigenvalues.png",
            f"DMD eigenvalues (h={h}, rank={op.rank}, span [{a}, {b}]: {best.hybrid.layers_replaced} layers "
            f"replaced, {best.hybrid.original_layers_replaced} original)",
        ),
    }  # fmt: skip
    S = S_train[:, a : b + 1, : op.state_dim].double()
    spectra = {"no delays (h=0)": singular_values(paired_snapshots(S, 0)[0])}
    if h > 0:
        spectra[f"delays (h={h})"] = best.fit.singular_values
    images["dmd/singular_values"] = plot_singular_values(spectra, out_dir / "dmd_singular_values.png", op.rank)
    features = getattr(datamodule, "features", None)
    if type(datamodule).__name__ == "YinYangDataModule" and features is not None:
        from kaelab.data.yinyang import yinyang_features

        x_te, y_te = test
        images["dmd/decision_boundary"] = plot_decision_boundaries(
            {
                f"original (test acc {accuracy(net, x_te, y_te):.3f})": net,
                f"hybrid, DMD carries {best.hybrid.layers_replaced} layers "
                f"({best.hybrid.original_layers_replaced} original) "
                f"(test acc {accuracy(best.hybrid, x_te, y_te):.3f})": best.hybrid,
            },
            lambda pts: yinyang_features(pts, features),
            out_dir / "dmd_decision_boundary.png",
            resolution=boundary_resolution,
            points=(np.asarray(x_te[:, :2]), np.asarray(y_te)),
        )
    return images
