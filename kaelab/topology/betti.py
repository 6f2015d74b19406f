"""Betti numbers of point clouds (Vietoris-Rips, Euclidean), as pure functions on tensors.

Convention (every function here): the Vietoris-Rips complex at filtration value ``eps`` holds the
edges of length ``<= eps`` (GUDHI's ``max_edge_length``; eps is an edge length, i.e. a diameter,
not a ball radius), and

    beta_k(eps) = #{persistence bars (birth, death) of dimension k with birth <= eps < death}.

So at ``eps = 0`` every distinct point is a component, duplicate points count once, and an edge of
length exactly ``eps`` already joins its endpoints.

Backends:

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
* ``gudhi``: GUDHI's Rips complex (max dimension 1 for beta_0; for beta_1 the graph is reduced by
  GUDHI's edge collapse, which preserves persistence, then expanded to dimension 2).
* ``giotto``: giotto-ph's ``ripser_parallel`` (float32 distances internally).

Edge collapse (GUDHI's, or giotto-ph's own) helps beta_1 at a small eps, where the graph is sparse;
on the near-complete graphs of a whole Betti curve it costs far more than it saves (1,000 points
in 20-d up to the longest MST edge: giotto-ph 2 s without, 72 s with it; GUDHI with collapse 244 s
and 2.3 GB, without it the expansion does not fit in memory), so curves use giotto-ph without it.

Bad input (eps < 0, an empty or 1-D cloud, non-finite values, an unknown backend) raises a one-line
:class:`kaelab.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from kaelab.errors import ConfigError

BACKENDS = ("mst", "gudhi", "giotto")
MAX_DIM = 1  # beta_0 and beta_1


# ------------------------------------------------------------------------------------------- checks
def as_points(x, name: str = "point cloud") -> torch.Tensor:
    """``x`` (tensor or array) as a float64 [n, d] tensor; one-line ConfigError if it is not a
    non-empty 2-D cloud of finite values."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D [n_points, dim] array, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ConfigError(f"{name} is empty (shape {tuple(t.shape)})")
    t = t.detach().to("cpu", torch.float64)
    if not torch.isfinite(t).all():
        raise ConfigError(f"{name} contains NaN or infinite values")
    return t


def check_eps(eps: float, name: str = "eps") -> float:
    eps = float(eps)
    if not eps >= 0 or not np.isfinite(eps):  # also rejects NaN
        raise ConfigError(f"{name}={eps} must be a finite filtration value >= 0")
    return eps


def check_eps_grid(eps_grid, name: str = "eps grid") -> np.ndarray:
    grid = np.asarray(eps_grid, dtype=np.float64).reshape(-1)
    if grid.size == 0:
        raise ConfigError(f"{name} is empty")
    for e in grid:
        check_eps(e, name)
    return grid


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown topology backend {backend!r} (one of {', '.join(BACKENDS)})")
    return backend


def check_maxdim(maxdim: int) -> int:
    if maxdim not in range(MAX_DIM + 1):
        raise ConfigError(f"maxdim={maxdim} must be 0 (beta_0) or 1 (beta_0 and beta_1)")
    return int(maxdim)


def subsample_indices(n: int, size: int | None, seed: int, name: str = "subsample") -> torch.Tensor:
    """``size`` distinct indices of ``range(n)`` drawn with a fixed seed (all of them, in order,
    when ``size`` is None or n)."""
    if size is None or size == n:
        return torch.arange(n)
    if size < 1:
        raise ConfigError(f"{name}={size} must be >= 1")
    if size > n:
        raise ConfigError(f"{name}={size} is larger than the data ({n} points)")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=g)[:size].sort().values


# ---------------------------------------------------------------------------------------- distances
def pairwise_sq_distances(x: torch.Tensor, block: int = 4096, center: bool = True) -> torch.Tensor:
    """Squared Euclidean distances [n, n] (in ``x``'s dtype) from one matrix product per block
    (BLAS), clamped at 0. Only the blocks on and above the diagonal are multiplied; the others are
    their transposes. ``center``: subtract the mean first (same distances, less cancellation).
    """
    if center:
        x = x - x.mean(0)
    n = len(x)
    sq = (x * x).sum(1)
    out = torch.empty(n, n, dtype=x.dtype)
    for i in range(0, n, block):
        xi = x[i : i + block]
        for j in range(i, n, block):
            xj = x[j : j + block]
            blk = torch.addmm(sq[i : i + block, None] + sq[None, j : j + block], xi, xj.T, alpha=-2.0)
            blk.clamp_(min=0.0)
            out[i : i + block, j : j + block] = blk
            if j != i:
                out[j : j + block, i : i + block] = blk.T
    out.diagonal().zero_()
    return out


PRECISIONS = ("float32", "float64")
U32 = 2.0**-24  # unit roundoff of float32


def _prim(d2: np.ndarray) -> np.ndarray:
    """Prim's algorithm on a dense matrix of (squared) distances: the tree's edges [n-1, 2].

    ``best`` keeps ``d2``'s dtype (comparisons of float32 values are exact either way; upcasting
    each row to float64 cost ~30% of the loop) and the loop writes into preallocated buffers."""
    n = len(d2)
    best = d2[0].copy()  # (squared) distance of each vertex to the tree
    best[0] = np.inf
    parent = np.zeros(n, dtype=np.int64)
    outside = np.ones(n, dtype=bool)
    outside[0] = False
    closer = np.empty(n, dtype=bool)
    edges = np.empty((n - 1, 2), dtype=np.int64)
    for k in range(n - 1):
        v = int(np.argmin(best))
        edges[k] = parent[v], v
        outside[v] = False
        best[v] = np.inf
        row = d2[v]
        np.less(row, best, out=closer)
        closer &= outside
        np.copyto(best, row, where=closer)
        np.copyto(parent, v, where=closer)
    return edges


def _kruskal(n: int, edges: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices of a minimum spanning forest among ``edges`` (union-find, by increasing length)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    keep = []
    for idx in np.argsort(lengths, kind="stable"):
        a, b = find(int(edges[idx, 0])), find(int(edges[idx, 1]))
        if a != b:
            parent[a] = b
            keep.append(idx)
    return np.asarray(keep, dtype=np.int64)


def _certify(
    pts: torch.Tensor, d2: np.ndarray, norms: np.ndarray, edges: np.ndarray, lengths: np.ndarray, kappa: float
):
    """Exact MST from a spanning tree found on rounded squared distances (cycle property).

    ``d2`` holds squared distances with |d2 - exact| <= kappa (|a| + |b|)^2 (``norms``: |a| per
    point). Adding the tree's edges shortest first merges clusters A and B at height w; every pair
    (u in A, v in B) has w as the longest tree edge on its tree path. Such a pair can shorten the
    tree only if its exact length is below w, and it cannot be if d2(u, v) >= w^2 + the bound. The
    pairs left are measured in float64; if one is shorter than its w, the MST of the tree plus
    those pairs (an MST of the complete graph, by the cycle property) replaces the tree.
    Returns ``(edges, lengths, number of pairs measured)``.
    """
    n = len(d2)
    order = np.argsort(lengths, kind="stable")
    # dendrogram of the tree: node n + k merges children[k]; leaves in an order that keeps every
    # cluster contiguous, so a cluster's points are a slice of ``leaves``
    uf = np.arange(2 * n - 1)
    node_of = np.arange(n)  # union-find root -> current dendrogram node
    children = np.empty((n - 1, 2), dtype=np.int64)

    def find(i: int) -> int:
        while uf[i] != i:
            uf[i] = uf[uf[i]]
            i = uf[i]
        return i

    for k, idx in enumerate(order):
        ra, rb = find(int(edges[idx, 0])), find(int(edges[idx, 1]))
        children[k] = node_of[ra], node_of[rb]
        uf[rb] = ra
        node_of[ra] = n + k
    size = np.ones(2 * n - 1, dtype=np.int64)
    reach = np.concatenate([norms, np.zeros(n - 1)])  # the largest norm in each cluster
    for k in range(n - 1):
        size[n + k] = size[children[k, 0]] + size[children[k, 1]]
        reach[n + k] = max(reach[children[k, 0]], reach[children[k, 1]])
    start = np.zeros(2 * n - 1, dtype=np.int64)
    leaves = np.empty(n, dtype=np.int64)
    stack = [2 * n - 2]
    while stack:
        node = stack.pop()
        if node < n:
            leaves[start[node]] = node
            continue
        left, right = children[node - n]
        start[left] = start[node]
        start[right] = start[node] + size[left]
        stack += [left, right]
    cand, height = [], []
    for k in range(n - 1):
        left, right = children[k]
        if size[left] * size[right] == 1:
            continue  # the tree edge is the only pair
        w2 = lengths[order[k]] ** 2
        limit = (w2 + kappa * (reach[left] + reach[right]) ** 2) * (1 + 4 * U32)
        ia = leaves[start[left] : start[left] + size[left]]
        ib = leaves[start[right] : start[right] + size[right]]
        if len(ia) > len(ib):  # rows from the smaller cluster: each row is read from one place
            ia, ib = ib, ia
        if len(ia) == 1:  # a point joins a cluster: one row
            below = d2[ia[0]].take(ib) < limit
            if np.count_nonzero(below) > 1:  # one hit is the tree edge itself
                hit_b = np.flatnonzero(below)
                cand.append(np.stack([np.full(len(hit_b), ia[0]), ib[hit_b]], 1))
        else:
            below = d2[np.ix_(ia, ib)] < limit
            if np.count_nonzero(below) > 1:
                hit_a, hit_b = np.nonzero(below)
                cand.append(np.stack([ia[hit_a], ib[hit_b]], 1))
        if len(cand) > len(height):
            height.append(np.full(len(cand[-1]), lengths[order[k]]))
    if not cand:
        return edges, lengths, 0
    extra = np.concatenate(cand)
    extra_len = edge_lengths(pts, extra)
    if not (extra_len < np.concatenate(height)).any():
        return edges, lengths, len(extra)  # no pair beats its merge height: the tree is exact
    all_edges = np.concatenate([edges, extra])
    all_len = np.concatenate([lengths, extra_len])
    keep = _kruskal(n, all_edges, all_len)
    return all_edges[keep], all_len[keep], len(extra)


def mst_edges(x, precision: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """Exact minimum spanning tree of the complete Euclidean graph on the cloud.

    Returns ``(edges [n-1, 2], lengths [n-1])`` sorted by length, the lengths computed as GUDHI does
    (float64, coordinate after coordinate), so they equal GUDHI's Rips filtration values bit for bit.

    ``precision="float64"``: squared distances from a float64 matrix product, Prim's algorithm on
    them. ``"float32"`` (the default, about twice as fast: the matrix product dominates): Prim on
    float32 distances, then the tree is certified exact with a rigorous bound on the float32
    rounding (see ``_certify``): the few pairs the bound cannot rule out are measured in float64,
    and the tree is repaired if one of them belongs to the exact MST. Both return the exact tree.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown MST precision {precision!r} (one of {', '.join(PRECISIONS)})")
    pts = as_points(x)
    n = len(pts)
    if n == 1:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    centred = pts - pts.mean(0)
    scale = float(centred.norm(dim=1).max())
    if precision == "float32" and (
        torch.get_float32_matmul_precision() != "highest"  # reduced-precision products void the bound
        or float(pts.mean(0).norm()) > 1e4 * max(scale, 1e-300)  # centring itself would lose digits
    ):
        precision = "float64"
    if precision == "float64":
        edges = _prim(pairwise_sq_distances(pts).numpy())
        lengths = edge_lengths(pts, edges)
    else:
        centred = centred.float()
        d2 = pairwise_sq_distances(centred, center=False).numpy()
        edges = _prim(d2)
        lengths = edge_lengths(pts, edges)
        norms = centred.double().norm(dim=1).numpy()
        d = pts.shape[1]
        # |fl32(|a|^2 + |b|^2 - 2 a.b) - |a - b|^2| <= gamma_{d+3} (|a| + |b|)^2 for the rounded points,
        # plus 2u (|a| + |b|)^2 for rounding the centred float64 points to float32
        kappa = (d + 8) * U32 * 1.01
        edges, lengths, _ = _certify(pts, d2, norms, edges, lengths, kappa)
    order = np.argsort(lengths, kind="stable")
    return edges[order], lengths[order]


def edge_lengths(x: torch.Tensor, edges: np.ndarray) -> np.ndarray:
    """Euclidean lengths of ``edges`` [m, 2] in float64, summing the squared coordinate differences
    one coordinate after another (the order GUDHI uses, so the lengths are bit-identical to its
    Rips filtration values)."""
    p = x.numpy()
    diff = np.ascontiguousarray((p[edges[:, 0]] - p[edges[:, 1]]).T)  # [d, m]
    acc = np.zeros(diff.shape[1])
    for row in diff:
        acc += row * row
    return np.sqrt(acc)


def beta0_from_mst(lengths: np.ndarray, eps_grid) -> np.ndarray:
    """beta_0(eps) = 1 + #{MST edges with length > eps} for each eps of the grid."""
    grid = check_eps_grid(eps_grid)
    lengths = np.sort(np.asarray(lengths, dtype=np.float64))
    return 1 + len(lengths) - np.searchsorted(lengths, grid, side="right")


# -------------------------------------------------------------------------------- persistence bars
def diagrams_gudhi(x, maxdim: int = 1, max_edge_length: float = np.inf, collapse: bool = True) -> list[np.ndarray]:
    """Persistence bars [m, 2] (birth, death; death = inf for classes alive at ``max_edge_length``)
    of dimensions 0..maxdim from GUDHI's Rips complex on edges of length <= max_edge_length."""
    import gudhi

    pts = as_points(x)
    maxdim = check_maxdim(maxdim)
    thresh = np.inf if max_edge_length is None else float(max_edge_length)
    rips = gudhi.RipsComplex(points=pts.numpy(), max_edge_length=thresh)
    st = rips.create_simplex_tree(max_dimension=1)
    if maxdim >= 1:
        if collapse:
            st.collapse_edges(nb_iterations=-1)
        st.expansion(maxdim + 1)
    # the top dimension's persistence is needed only when the complex has no higher simplices
    # (a single point, or no edge below the threshold)
    st.compute_persistence(homology_coeff_field=2, persistence_dim_max=st.dimension() <= maxdim)
    return [
        np.asarray(st.persistence_intervals_in_dimension(k), dtype=np.float64).reshape(-1, 2) for k in range(maxdim + 1)
    ]


def diagrams_giotto(
    x, maxdim: int = 1, max_edge_length: float = np.inf, collapse: bool = False, n_threads: int = -1
) -> list[np.ndarray]:
    """Persistence bars of dimensions 0..maxdim from giotto-ph's ``ripser_parallel`` (its own edge
    collapse with ``collapse``)."""
    from gph import ripser_parallel

    pts = as_points(x)
    maxdim = check_maxdim(maxdim)
    thresh = np.inf if max_edge_length is None else float(max_edge_length)
    out = ripser_parallel(pts.numpy(), maxdim=maxdim, thresh=thresh, collapse_edges=collapse, n_threads=n_threads)
    return [np.asarray(d, dtype=np.float64).reshape(-1, 2) for d in out["dgms"]]


def diagram_h0_mst(x) -> np.ndarray:
    """The whole dimension-0 diagram from the MST: bars (0, l) for each MST edge and (0, inf)."""
    _, lengths = mst_edges(x)
    deaths = np.concatenate([lengths, [np.inf]])
    return np.stack([np.zeros_like(deaths), deaths], axis=1)


def betti_from_bars(bars: np.ndarray, eps_grid) -> np.ndarray:
    """#{bars with birth <= eps < death} for each eps of the grid."""
    grid = check_eps_grid(eps_grid)
    bars = np.asarray(bars, dtype=np.float64).reshape(-1, 2)
    return ((bars[None, :, 0] <= grid[:, None]) & (grid[:, None] < bars[None, :, 1])).sum(1)


def persistence_diagrams(
    x,
    maxdim: int = 1,
    max_edge_length: float = np.inf,
    backend: str = "mst",
    collapse: bool = True,
    h1_backend: str | None = None,
) -> list[np.ndarray]:
    """Bars of dimensions 0..maxdim up to ``max_edge_length``. ``backend`` computes dimension 0
    (``mst``: the MST's bars, exact for every eps); dimension 1 comes from ``h1_backend`` (default:
    GUDHI, or giotto-ph when ``backend`` is giotto)."""
    backend = check_backend(backend)
    maxdim = check_maxdim(maxdim)
    h1 = h1_backend or ("giotto" if backend == "giotto" else "gudhi")
    if h1 not in ("gudhi", "giotto"):
        raise ConfigError(f"unknown beta_1 backend {h1!r} (gudhi or giotto; the MST has no cycles)")
    pts = as_points(x)
    engines = {"gudhi": diagrams_gudhi, "giotto": diagrams_giotto}
    if backend != "mst" and (maxdim == 0 or h1 == backend):
        return engines[backend](pts, maxdim, max_edge_length, collapse)
    h0 = diagram_h0_mst(pts) if backend == "mst" else engines[backend](pts, 0, max_edge_length)[0]
    if maxdim == 0:
        return [h0]
    return [h0] + engines[h1](pts, maxdim, max_edge_length, collapse)[1:]


# ------------------------------------------------------------------------------------ Betti numbers
def betti_curves(
    x, eps_grid, maxdim: int = 1, backend: str = "mst", collapse: bool = True, h1_backend: str | None = None
) -> dict[int, np.ndarray]:
    """``{k: beta_k(eps) for eps in eps_grid}`` for k = 0..maxdim (integer arrays)."""
    grid = check_eps_grid(eps_grid)
    backend = check_backend(backend)
    maxdim = check_maxdim(maxdim)
    pts = as_points(x)
    if backend == "mst" and maxdim == 0:
        return {0: beta0_from_mst(mst_edges(pts)[1], grid)}
    dgms = persistence_diagrams(pts, maxdim, float(grid.max()), backend, collapse, h1_backend)
    return {k: betti_from_bars(dgms[k], grid) for k in range(maxdim + 1)}


def betti_numbers(x, eps: float, maxdim: int = 1, backend: str = "mst", collapse: bool = True) -> dict[int, int]:
    """``{k: beta_k(eps)}`` for k = 0..maxdim."""
    eps = check_eps(eps)
    return {k: int(v[0]) for k, v in betti_curves(x, [eps], maxdim, backend, collapse).items()}


def beta0(x, eps: float, backend: str = "mst") -> int:
    """Number of connected components of the eps-neighbourhood graph (birth <= eps < death)."""
    return betti_numbers(x, eps, 0, backend)[0]


def beta1(x, eps: float, backend: str = "gudhi", collapse: bool = True) -> int:
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
    """``num`` evenly spaced filtration values from ``start`` to ``stop`` (inclusive)."""
    check_eps(start, "eps grid start")
    check_eps(stop, "eps grid stop")
    if num < 2:
        raise ConfigError(f"an eps grid needs at least 2 values, got num={num}")
    if stop <= start:
        raise ConfigError(f"eps grid stop={stop} must be larger than start={start}")
    return np.linspace(start, stop, int(num))


__all__: Sequence[str] = [
    "BACKENDS",
    "as_points",
    "beta0",
    "beta0_from_mst",
    "beta1",
    "betti_curves",
    "betti_from_bars",
    "betti_numbers",
    "bottleneck",
    "check_backend",
    "check_eps",
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
