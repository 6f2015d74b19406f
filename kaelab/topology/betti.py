"""Betti numbers of point clouds (Vietoris-Rips, Euclidean), as pure functions on tensors.

Convention (every function here): the Vietoris-Rips complex at filtration value ``eps`` holds the
edges of length ``<= eps`` (GUDHI's ``max_edge_length``; eps is an edge length, i.e. a diameter,
not a ball radius), and

    beta_k(eps) = #{persistence bars (birth, death) of dimension k with birth <= eps < death}.

So at ``eps = 0`` every distinct point is a component, duplicate points count once, and an edge of
length exactly ``eps`` already joins its endpoints.

Backends (``kaelab.topology.backends``: one interface, ``diagrams(points, maxdim,
max_edge_length)``; every function below that takes a ``backend`` takes a built-in name, a
``_target_`` config or a backend object):

* ``mst``: beta_0 only, exact. beta_0(eps) is the number of connected components of the
  eps-neighbourhood graph, so one minimum spanning tree gives the whole curve:
  beta_0(eps) = 1 + #{MST edges longer than eps}. The squared distances come from one matrix
  product (BLAS; float32, half the time and memory of float64), the tree from Prim's algorithm on
  the dense matrix (O(n^2), vectorised per step); the tree is then certified exact against a
  rigorous bound on the float32 rounding (the few pairs the bound cannot rule out are measured in
  float64 and the tree repaired if needed, ``mst_edges``), and its edge lengths are computed in
  float64 exactly as GUDHI computes Rips filtration values, so both backends give identical
  numbers even at eps equal to an edge length. beta_1 with this backend comes from GUDHI (or
  giotto-ph, ``h1_backend``): a tree carries no cycles.
* ``gudhi``: GUDHI's Rips complex (max dimension 1 for beta_0; for beta_1 expanded to dimension 2,
  after GUDHI's edge collapse, which preserves persistence, with ``collapse``).
* ``giotto``: giotto-ph's ``ripser_parallel`` (float32 distances internally).

Edge collapse (GUDHI's, or giotto-ph's own) helps beta_1 at a small eps, where the graph is sparse;
on the near-complete graphs of a whole Betti curve it costs far more than it saves (1,000 points
in 20-d up to the longest MST edge: giotto-ph 2 s without, 72 s with it; GUDHI with collapse 244 s
and 2.3 GB, without it the expansion does not fit in memory), so curves use giotto-ph without it,
and no backend collapses by default (``DEFAULT_COLLAPSE``).

Bad input (eps < 0, an empty or 1-D cloud, non-finite values, an unknown backend) raises a one-line
:class:`kaelab.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kaelab.errors import ConfigError
from kaelab.topology.defaults import DEFAULT_BACKEND, DEFAULT_COLLAPSE, DEFAULT_H1_BACKEND, MAX_DIM
from kaelab.topology.persistence import (  # re-exported: the engines under the Betti numbers
    as_points,
    beta0_from_mst,
    betti_from_bars,
    check_eps,
    check_eps_grid,
    check_maxdim,
    diagram_h0_mst,
    diagrams_giotto,
    diagrams_gudhi,
    mst_edges,
    pairwise_sq_distances,
    subsample_indices,
)


def _backend(spec, key: str, collapse: bool):
    # backends.py builds on the engines above, so it is imported when a backend is asked for
    from kaelab.topology.backends import resolve_backend

    return resolve_backend(spec, key, collapse=collapse)


def persistence_diagrams(
    x,
    maxdim: int = MAX_DIM,
    max_edge_length: float = np.inf,
    backend=DEFAULT_BACKEND,
    collapse: bool = DEFAULT_COLLAPSE,
    h1_backend=None,
) -> list[np.ndarray]:
    """Bars of dimensions 0..maxdim up to ``max_edge_length``. ``backend`` computes dimension 0,
    ``h1_backend`` dimension 1 (default: ``backend`` itself if it computes beta_1, else
    ``DEFAULT_H1_BACKEND``: the MST has no cycles). Each is a built-in name, a ``_target_`` config
    or a backend object (kaelab.topology.backends); ``collapse`` goes to those built here that take it."""
    from kaelab.topology.backends import diagrams_of, max_dim

    maxdim = check_maxdim(maxdim)
    pts = as_points(x)
    b0 = _backend(backend, "backend", collapse)
    if maxdim == 0:
        return diagrams_of(b0, pts, 0, max_edge_length)
    if h1_backend is None:
        h1_backend = b0 if max_dim(b0) >= 1 else DEFAULT_H1_BACKEND
    h1 = _backend(h1_backend, "h1_backend", collapse)
    if max_dim(h1) < 1:
        raise ConfigError(f"h1_backend {type(h1).__name__} computes beta_0 only (the MST has no cycles)")
    if h1 == b0:
        return diagrams_of(b0, pts, maxdim, max_edge_length)
    return diagrams_of(b0, pts, 0, max_edge_length) + diagrams_of(h1, pts, maxdim, max_edge_length)[1:]


# ------------------------------------------------------------------------------------ Betti numbers
def betti_curves(
    x,
    eps_grid,
    maxdim: int = MAX_DIM,
    backend=DEFAULT_BACKEND,
    collapse: bool = DEFAULT_COLLAPSE,
    h1_backend=None,
) -> dict[int, np.ndarray]:
    """Betti curves ``{k: beta_k(eps) for eps in eps_grid}`` for k = 0..maxdim (integer arrays) of
    the Vietoris-Rips filtration of ``x`` (KAE paper, App. A.1; Figure 2B); the backends as in
    ``persistence_diagrams`` (beta_0 alone: the backend's ``beta0``, for ``mst`` one tree).

    Examples:
        >>> import torch, kaelab as kl
        >>> two_blobs = torch.cat([torch.zeros(5, 2), torch.zeros(5, 2) + 10]) + 0.01 * torch.arange(10)[:, None]
        >>> kl.betti_curves(two_blobs, [0.0, 1.0, 20.0], maxdim=0)[0].tolist()
        [10, 2, 1]
    """
    from kaelab.topology.backends import beta0_curve

    grid = check_eps_grid(eps_grid)
    maxdim = check_maxdim(maxdim)
    pts = as_points(x)
    if maxdim == 0:
        return {0: beta0_curve(_backend(backend, "backend", collapse), pts, grid)}
    dgms = persistence_diagrams(pts, maxdim, float(grid.max()), backend, collapse, h1_backend)
    return {k: betti_from_bars(dgms[k], grid) for k in range(maxdim + 1)}


def betti_numbers(
    x, eps: float, maxdim: int = MAX_DIM, backend=DEFAULT_BACKEND, collapse: bool = DEFAULT_COLLAPSE, h1_backend=None
) -> dict[int, int]:
    """Betti numbers ``{k: beta_k(eps)}`` for k = 0..maxdim of the Vietoris-Rips complex at ``eps``
    (KAE paper, App. A.1: beta_0 connected components, beta_1 one-dimensional holes).

    Examples:
        >>> import math, torch, kaelab as kl
        >>> circle = torch.tensor([[math.cos(t), math.sin(t)] for t in torch.linspace(0, 6.0, 40).tolist()])
        >>> kl.betti_numbers(circle, eps=0.5, maxdim=1)
        {0: 1, 1: 1}
    """
    eps = check_eps(eps)
    return {k: int(v[0]) for k, v in betti_curves(x, [eps], maxdim, backend, collapse, h1_backend).items()}


def beta0(x, eps: float, backend=DEFAULT_BACKEND) -> int:
    """beta_0 at ``eps``: the number of connected components of the eps-neighbourhood graph (birth
    <= eps < death; KAE paper, Sec. 4.2 and Figure 3), exact from one minimum spanning tree.

    Examples:
        >>> import torch, kaelab as kl
        >>> kl.beta0(torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0]]), eps=1.0)
        2
    """
    return betti_numbers(x, eps, 0, backend)[0]


def beta0_path(states, eps: float, backend=DEFAULT_BACKEND) -> np.ndarray:
    """beta_0 at ``eps`` of each point cloud of a sequence: the layers of a network (Figure 3, top
    left) or the KAE's decoded steps (Figure 3, top right; a tensor [k + 1, n, d] from
    ``KAE.decoded_steps``), as an integer array with one count per state.

    Examples:
        >>> import torch, kaelab as kl
        >>> apart = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        >>> kl.beta0_path([apart, 0.2 * apart, 0.0 * apart], eps=0.5).tolist()
        [4, 1, 1]
    """
    return np.array([beta0(s, eps, backend) for s in states], dtype=np.int64)


def beta1(x, eps: float, backend=DEFAULT_H1_BACKEND, collapse: bool = DEFAULT_COLLAPSE) -> int:
    """Number of independent 1-cycles of the Rips complex at eps (birth <= eps < death)."""
    return betti_numbers(x, eps, 1, backend, collapse)[1]


# ---------------------------------------------------------------------------------------- distances
def curve_distance(a: np.ndarray, b: np.ndarray, eps_grid) -> float:
    """L1 distance between two Betti curves on the same grid: the integral of |a - b| over eps
    (trapezoid rule), divided by the grid's range (so it reads as an average difference in count)."""
    grid = check_eps_grid(eps_grid)
    diff = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    span = float(grid[-1] - grid[0])
    if len(grid) < 2 or span <= 0:
        return float(diff.mean())
    return float(np.trapezoid(diff, grid) / span)


def truncate_diagram(bars: np.ndarray, max_eps: float, drop_essential: bool = True) -> np.ndarray:
    """Bars born by ``max_eps`` with deaths clipped at ``max_eps`` (infinite ones too); with
    ``drop_essential`` the one bar that never dies in dimension 0 is left out first."""
    bars = np.asarray(bars, dtype=np.float64).reshape(-1, 2)
    if drop_essential and len(bars):
        inf = np.flatnonzero(~np.isfinite(bars[:, 1]))
        if len(inf):
            bars = np.delete(bars, inf[0], axis=0)
    bars = bars[bars[:, 0] <= max_eps]
    return np.stack([bars[:, 0], np.minimum(bars[:, 1], max_eps)], axis=1) if len(bars) else bars


def bottleneck(a: np.ndarray, b: np.ndarray) -> float:
    """GUDHI's (exact) bottleneck distance between two diagrams."""
    import gudhi

    return float(gudhi.bottleneck_distance(np.asarray(a).reshape(-1, 2), np.asarray(b).reshape(-1, 2), 0.0))


def eps_grid(start: float, stop: float, num: int) -> np.ndarray:
    """``num`` evenly spaced filtration values eps from ``start`` to ``stop`` (inclusive): the grid
    of a Betti curve (KAE paper, App. A.1, Figure 2B).

    Examples:
        >>> import kaelab as kl
        >>> kl.eps_grid(0.0, 1.0, 5).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    check_eps(start, "eps grid start")
    check_eps(stop, "eps grid stop")
    if num < 2:
        raise ConfigError(f"an eps grid needs at least 2 values, got num={num}")
    if stop <= start:
        raise ConfigError(f"eps grid stop={stop} must be larger than start={start}")
    return np.linspace(start, stop, int(num))


__all__: Sequence[str] = [
    "as_points",
    "beta0",
    "beta0_path",
    "beta0_from_mst",
    "beta1",
    "betti_curves",
    "betti_from_bars",
    "betti_numbers",
    "bottleneck",
    "check_eps",
    "check_eps_grid",
    "curve_distance",
    "diagram_h0_mst",
    "diagrams_giotto",
    "diagrams_gudhi",
    "eps_grid",
    "mst_edges",
    "pairwise_sq_distances",
    "persistence_diagrams",
    "subsample_indices",
    "truncate_diagram",
]
