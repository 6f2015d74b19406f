"""Betti numbers on shapes with known answers; the MST fast path equals GUDHI exactly; bad input
is a one-line ConfigError. Convention: beta_k(eps) counts the bars with birth <= eps < death."""

import numpy as np
import pytest
import torch

from kaelab.errors import ConfigError
from kaelab.topology import betti as B

BACKENDS = ["mst", "gudhi", "giotto"]


def two_clusters() -> np.ndarray:
    """Two 5 x 5 grids of spacing 0.25 (exact in binary), 7 apart (closest pair: 7.0)."""
    g = np.stack(np.meshgrid(np.arange(5) * 0.25, np.arange(5) * 0.25), -1).reshape(-1, 2)
    return np.concatenate([g, g + [8.0, 0.0]])


def circle(n: int = 24) -> np.ndarray:
    t = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_clusters_beta0(backend):
    x = two_clusters()
    assert B.beta0(x, 0.2, backend) == 50  # below the grid spacing: every point alone
    for eps in (0.25, 0.3, 1.0, 5.0, 6.99):  # spacing (edge == eps counts) up to the gap
        assert B.beta0(x, eps, backend) == 2, eps
    assert B.beta0(x, 7.0, backend) == 1  # the closest pair across the gap is exactly 7
    assert B.beta0(x, 100.0, backend) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_circle_beta1(backend):
    x = circle(24)  # neighbours 2 sin(pi/24) = 0.261 apart; the hole fills at sqrt(3) (triangles)
    assert B.betti_numbers(x, 0.2, 1, backend) == {0: 24, 1: 0}
    for eps in (0.27, 0.5, 1.0, 1.5, 1.7):
        assert B.betti_numbers(x, eps, 1, backend) == {0: 1, 1: 1}, eps
    assert B.betti_numbers(x, 2.1, 1, backend) == {0: 1, 1: 0}  # above the diameter: a full simplex


def test_circle_curve_same_for_every_backend_with_and_without_collapse():
    x = circle(30) + np.random.default_rng(0).normal(scale=0.02, size=(30, 2))
    grid = np.linspace(0, 2.2, 45)
    plain = B.betti_curves(x, grid, 1, "gudhi", collapse=False)
    for backend, h1 in (("mst", None), ("gudhi", None), ("mst", "giotto"), ("giotto", "gudhi")):
        got = B.betti_curves(x, grid, 1, backend, h1_backend=h1)
        np.testing.assert_array_equal(got[0], plain[0])
        np.testing.assert_array_equal(got[1], plain[1])
    assert plain[1].max() == 1 and plain[0][-1] == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_point(backend):
    x = torch.tensor([[0.3, -1.0, 2.0]])
    assert B.betti_numbers(x, 0.0, 1, backend) == {0: 1, 1: 0}
    curves = B.betti_curves(x, [0.0, 1.0, 10.0], 1, backend)
    assert curves[0].tolist() == [1, 1, 1] and curves[1].tolist() == [0, 0, 0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicate_points_count_once(backend):
    x = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert B.beta0(x, 0.0, backend) == 2
    assert B.beta0(x, 0.5, backend) == 2
    assert B.beta0(x, 1.0, backend) == 1  # an edge of length exactly eps joins its ends


@pytest.mark.parametrize("backend", BACKENDS)
def test_eps_below_and_above_every_distance(backend):
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(1)).double()
    d = torch.cdist(x, x)
    off = d[~torch.eye(40, dtype=torch.bool)]
    assert B.betti_numbers(x, 0.5 * off.min().item(), 1, backend) == {0: 40, 1: 0}
    assert B.betti_numbers(x, 0.0, 1, backend) == {0: 40, 1: 0}
    assert B.betti_numbers(x, 1.01 * off.max().item(), 1, backend) == {0: 1, 1: 0}


@pytest.mark.parametrize("n,dim", [(2, 1), (10, 2), (100, 3), (300, 10), (200, 50), (500, 784)])
def test_mst_fast_path_equals_gudhi_exactly(n, dim):
    rng = np.random.default_rng(n * 1000 + dim)
    x = rng.normal(size=(n, dim)) * rng.uniform(0.1, 3.0, size=dim)
    _, lengths = B.mst_edges(x)
    # the grid holds every MST edge length itself, where birth <= eps < death decides the count
    grid = np.sort(np.concatenate([np.linspace(0, lengths.max() * 1.05, 60), lengths[:: max(1, n // 50)]]))
    fast = B.betti_curves(x, grid, 0, "mst")[0]
    ref = B.betti_curves(x, grid, 0, "gudhi")[0]
    np.testing.assert_array_equal(fast, ref)
    np.testing.assert_array_equal(B.beta0_from_mst(B.mst_edges(x, "float64")[1], grid), ref)
    # the H0 diagram: GUDHI's finite deaths are the MST's edge lengths, bit for bit
    g0 = B.diagrams_gudhi(x, 0)[0]
    np.testing.assert_array_equal(np.sort(g0[np.isfinite(g0[:, 1]), 1]), lengths[lengths > 0])


def test_float32_tree_is_certified_and_repaired():
    """Four points whose two candidate closing edges differ by 1e-9: float32 cannot tell them apart
    and Prim keeps the longer one; the certification measures it in float64 and swaps it out."""
    from kaelab.topology.persistence import _prim, pairwise_sq_distances

    x = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0 + 1e-9], [0.0, 1.0]])
    centred = torch.as_tensor(x - x.mean(0)).float()
    assert [1, 2] in _prim(pairwise_sq_distances(centred, center=False).numpy()).tolist()  # the wrong tree
    edges, lengths = B.mst_edges(x, "float32")
    assert lengths.tolist() == [1.0, 1.0, 1.0] and [1, 2] not in edges.tolist()
    np.testing.assert_array_equal(lengths, B.mst_edges(x, "float64")[1])
    g0 = B.diagrams_gudhi(x, 0)[0]
    np.testing.assert_array_equal(np.sort(g0[np.isfinite(g0[:, 1]), 1]), lengths)


@pytest.mark.parametrize("seed", [0, 1])
def test_float32_and_float64_trees_agree_on_near_ties(seed):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(20), np.arange(20)), -1).reshape(-1, 2).astype(float)
    for x in (grid, grid + rng.normal(scale=1e-9, size=grid.shape), np.concatenate([grid, grid[:30]])):
        l32, l64 = B.mst_edges(x, "float32")[1], B.mst_edges(x, "float64")[1]
        np.testing.assert_array_equal(l32, l64)
        g0 = B.diagrams_gudhi(x, 0)[0]
        np.testing.assert_array_equal(np.sort(g0[np.isfinite(g0[:, 1]), 1]), l64[l64 > 0])


def test_mst_curve_matches_giotto_away_from_float32_rounding():
    x = np.random.default_rng(3).normal(size=(400, 20))
    grid = np.linspace(0, 8, 81)
    np.testing.assert_array_equal(B.betti_curves(x, grid, 0, "mst")[0], B.betti_curves(x, grid, 0, "giotto")[0])


def test_pairwise_sq_distances_blocks_match_cdist():
    x = torch.randn(300, 17, dtype=torch.float64)
    ref = torch.cdist(x, x) ** 2
    for block in (64, 100, 4096):
        torch.testing.assert_close(B.pairwise_sq_distances(x, block=block), ref, rtol=1e-9, atol=1e-9)


def test_beta0_from_mst_convention():
    lengths = np.array([1.0, 2.0])
    assert B.beta0_from_mst(lengths, [0.0, 0.999, 1.0, 1.5, 2.0, 3.0]).tolist() == [3, 3, 2, 2, 1, 1]


def test_eps_for_beta0():
    from kaelab.topology.pipeline import eps_for_beta0

    lengths = np.array([1.0, 2.0, 3.0])
    assert [eps_for_beta0(lengths, t) for t in (1, 2, 3, 4, 5)] == [3.0, 2.0, 1.0, 0.0, None]
    assert eps_for_beta0(np.array([1.0, 2.0, 2.0]), 2) is None  # a tie: no eps gives 2 components


def test_subsample_is_seeded_and_distinct():
    a = B.subsample_indices(100, 30, seed=4)
    assert torch.equal(a, B.subsample_indices(100, 30, seed=4))
    assert len(set(a.tolist())) == 30 and not torch.equal(a, B.subsample_indices(100, 30, seed=5))
    assert torch.equal(B.subsample_indices(7, None, seed=0), torch.arange(7))


def test_curve_and_bottleneck_distances():
    grid = np.linspace(0, 1, 11)
    a = np.ones(11)
    assert B.curve_distance(a, a, grid) == 0.0
    assert B.curve_distance(a, a + 2, grid) == pytest.approx(2.0)
    d1 = np.array([[0.0, 0.5], [0.0, np.inf]])
    d2 = np.array([[0.0, 0.7], [0.0, np.inf]])
    assert B.bottleneck(B.truncate_diagram(d1, 1.0), B.truncate_diagram(d2, 1.0)) == pytest.approx(0.2)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: B.beta0(np.zeros((3, 2)), -0.1), "eps=-0.1 must be"),
        (lambda: B.beta0(np.zeros((3, 2)), float("nan")), "must be a finite"),
        (lambda: B.beta0(np.zeros((0, 2)), 0.1), "is empty"),
        (lambda: B.beta0(np.zeros(5), 0.1), "must be a 2-D"),
        (lambda: B.beta0(np.zeros((2, 2, 2)), 0.1), "must be a 2-D"),
        (lambda: B.beta0(np.array([[0.0, np.inf]]), 0.1), "NaN or infinite"),
        (lambda: B.beta0(np.zeros((3, 2)), 0.1, backend="ripser++"), "unknown topology backend"),
        (lambda: B.betti_numbers(np.zeros((3, 2)), 0.1, maxdim=2), "maxdim=2"),
        (lambda: B.subsample_indices(10, 11, seed=0), "larger than the data"),
        (lambda: B.subsample_indices(10, 0, seed=0), "must be >= 1"),
        (lambda: B.betti_curves(np.zeros((3, 2)), [], 0), "is empty"),
        (lambda: B.eps_grid(0.0, 1.0, 1), "at least 2"),
        (lambda: B.mst_edges(np.zeros((3, 2)), "float16"), "unknown MST precision"),
    ],
)
def test_bad_input_is_one_line_config_error(call, match):
    with pytest.raises(ConfigError, match=match) as err:
        call()
    assert "\n" not in str(err.value)
