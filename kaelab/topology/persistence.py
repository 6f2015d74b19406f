"""The engines under the Betti numbers: point-cloud checks, the exact minimum spanning tree, and
persistence bars from GUDHI and giotto-ph (KAE paper, App. A.1: the Vietoris-Rips complex).

``kaelab.topology.backends`` wraps these engines behind one interface and ``kaelab.topology.betti``
(which re-exports them) turns bars into Betti numbers and curves; see betti.py for the conventions
and why the MST is exact.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from kaelab.errors import ConfigError
from kaelab.topology.defaults import DEFAULT_COLLAPSE, MAX_DIM


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


class _Dendrogram(NamedTuple):
    """Single-linkage dendrogram of a spanning tree on n points: node n + k merges ``children[k]``
    along the k-th shortest tree edge (``order[k]``); per node its number of points (``size``) and
    their largest norm (``reach``); the points of node v are ``leaves[start[v] : start[v] + size[v]]``
    (a leaf order that keeps every cluster contiguous)."""

    order: np.ndarray
    children: np.ndarray
    size: np.ndarray
    reach: np.ndarray
    start: np.ndarray
    leaves: np.ndarray

    def points(self, node: int) -> np.ndarray:
        return self.leaves[self.start[node] : self.start[node] + self.size[node]]


def _dendrogram(edges: np.ndarray, lengths: np.ndarray, norms: np.ndarray) -> _Dendrogram:
    n = len(norms)
    order = np.argsort(lengths, kind="stable")
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
    reach = np.concatenate([norms, np.zeros(n - 1)])
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
    return _Dendrogram(order, children, size, reach, start, leaves)


def _uncertain_pairs(d2: np.ndarray, tree: _Dendrogram, lengths: np.ndarray, kappa: float):
    """The pairs across each merge whose rounded squared distance cannot rule out an exact length
    below the merge height w: d2 < (w^2 + kappa (reach_A + reach_B)^2)(1 + 4u). Returns
    ``(pairs [m, 2], their merge heights [m])``, or None when there are none."""
    cand, height = [], []
    for k, (left, right) in enumerate(tree.children):
        if tree.size[left] * tree.size[right] == 1:
            continue  # the tree edge is the only pair
        w = lengths[tree.order[k]]
        limit = (w * w + kappa * (tree.reach[left] + tree.reach[right]) ** 2) * (1 + 4 * U32)
        ia, ib = tree.points(left), tree.points(right)
        if len(ia) > len(ib):  # rows from the smaller cluster: each row is read from one place
            ia, ib = ib, ia
        if len(ia) == 1:  # a point joins a cluster: one row
            below = d2[ia[0]].take(ib) < limit
            hit_a, hit_b = np.zeros(np.count_nonzero(below), dtype=np.int64), np.flatnonzero(below)
        else:
            hit_a, hit_b = np.nonzero(d2[np.ix_(ia, ib)] < limit)
        if len(hit_b) > 1:  # one hit is the tree edge itself
            cand.append(np.stack([ia[hit_a], ib[hit_b]], 1))
            height.append(np.full(len(hit_b), w))
    return (np.concatenate(cand), np.concatenate(height)) if cand else None


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
    uncertain = _uncertain_pairs(d2, _dendrogram(edges, lengths, norms), lengths, kappa)
    if uncertain is None:
        return edges, lengths, 0
    extra, height = uncertain
    extra_len = edge_lengths(pts, extra)
    if not (extra_len < height).any():
        return edges, lengths, len(extra)  # no pair beats its merge height: the tree is exact
    all_edges = np.concatenate([edges, extra])
    all_len = np.concatenate([lengths, extra_len])
    keep = _kruskal(len(d2), all_edges, all_len)
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
def diagrams_gudhi(
    x, maxdim: int = MAX_DIM, max_edge_length: float = np.inf, collapse: bool = DEFAULT_COLLAPSE
) -> list[np.ndarray]:
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
    x, maxdim: int = MAX_DIM, max_edge_length: float = np.inf, collapse: bool = DEFAULT_COLLAPSE, n_threads: int = -1
) -> list[np.ndarray]:
    """Persistence bars of dimensions 0..maxdim from giotto-ph's ``ripser_parallel`` (its own edge
    collapse with ``collapse``)."""
    from gph import ripser_parallel

    pts = as_points(x)
    maxdim = check_maxdim(maxdim)
    thresh = np.inf if max_edge_length is None else float(max_edge_length)
    out = ripser_parallel(pts.numpy(), maxdim=maxdim, thresh=thresh, collapse_edges=collapse, n_threads=n_threads)
    return [np.asarray(d, dtype=np.float64).reshape(-1, 2) for d in out["dgms"]]


def diagram_h0_mst(x, precision: str = "float32") -> np.ndarray:
    """The whole dimension-0 diagram from the MST: bars (0, l) for each MST edge and (0, inf)."""
    _, lengths = mst_edges(x, precision)
    deaths = np.concatenate([lengths, [np.inf]])
    return np.stack([np.zeros_like(deaths), deaths], axis=1)


def betti_from_bars(bars: np.ndarray, eps_grid) -> np.ndarray:
    """#{bars with birth <= eps < death} for each eps of the grid."""
    grid = check_eps_grid(eps_grid)
    bars = np.asarray(bars, dtype=np.float64).reshape(-1, 2)
    return ((bars[None, :, 0] <= grid[:, None]) & (grid[:, None] < bars[None, :, 1])).sum(1)
