"""Benchmark of the topology stage: kaelab's exact MST beta_0 curve against giotto-ph and GUDHI, and
beta_1 at eps with GUDHI (with and without edge collapse) against giotto-ph, on the same inputs.

``bench_topology(out)`` adds ``topology/...`` numbers to ``out`` (scripts/bench.py calls it); run
standalone it writes ``outputs/bench/topology.json``. Timings are medians of interleaved runs
(A, B, A, B, ...) in one process, so a ratio compares the methods under the same machine load.

Input: the 10,000 MNIST test images through the cached MNIST base model of ``+experiment=mnist_topology``
(its first layer, ``input_layer``, 784-d), preprocessed as in the KAE paper (Sec. 3.3: centred,
PCA, Frobenius norm 100, fitted here on this matrix); without a cached model the 10,000 test images
themselves (784-d), and without MNIST files a Gaussian cloud of that shape. ``input`` says which.

* ``topology/beta0_curve``: the whole beta_0 curve (every filtration value) of the 10,000 points:
  ``mst`` (kaelab.topology.betti.mst_edges: float32 BLAS distances, Prim, the tree certified exact;
  ``mst_float64``: the same from float64 distances) against
  ``giotto`` (``gph.ripser_parallel(X, maxdim=0)``); curves compared on a 200-value grid and
  bar by bar. GUDHI's Rips complex (max dimension 1, edges up to the longest MST edge, so the
  whole curve) runs on subsamples of growing size in a child process with a 60 s limit; the
  largest it finishes is timed against the MST on the same subsample.
* ``topology/beta1``: beta_1 at eps on 2,000 of the points: GUDHI with edge collapse, GUDHI
  without, giotto-ph (``maxdim=1, thresh=eps``); the numbers must agree.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kaelab.topology import betti as B  # noqa: E402

GUDHI_LIMIT_S = 60.0
BETA1_EPS_MNIST = 0.166  # the paper's layer filtration value


def interleaved(fns: dict, repeats: int) -> tuple[dict[str, float], dict[str, list[float]], dict]:
    """Run each fn once per round, in turn (A, B, A, B, ...); median seconds, all times, last results."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    results: dict = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, times, results


def _round_ratios(times: dict[str, list[float]], a: str, b: str) -> list[float]:
    """Per-round ratios a / b of the times ``interleaved`` measured in the same rounds."""
    return sorted(x / y for x, y in zip(times[a], times[b], strict=True))


def _round_ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    return statistics.median(_round_ratios(times, a, b))


def _round_ratio_spread(times: dict[str, list[float]], a: str, b: str) -> list[float]:
    r = _round_ratios(times, a, b)
    return [r[0], r[-1]]


def _seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def load_points(n: int = 10000) -> tuple[np.ndarray, str, float | None]:
    """(points [n, 784] float64, description, the paper's eps if these are preprocessed representations)."""
    try:
        from hydra import compose, initialize_config_module

        from kaelab.base_model import base_model, base_model_key
        from kaelab.cache import ArtifactCache
        from kaelab.config import register_configs
        from kaelab.data import build_datamodule

        register_configs()
        overrides = ["+experiment=mnist_topology", "data.download=false", "paths.run_dir=/tmp/kaelab_bench"]
        with initialize_config_module(version_base="1.3", config_module="kaelab.conf"):
            cfg = compose(config_name="config", overrides=overrides)
        if not ArtifactCache(cfg.paths.cache_dir).exists("base_model", base_model_key(cfg)):
            dm = build_datamodule(cfg.data)
            dm.prepare_data()
            dm.setup()
            x = dm.tensors("test")[0][:n].reshape(-1, 784)
            return x.double().numpy(), f"MNIST test images [{len(x)}, 784] (no cached base model)", None
        base = base_model(cfg, Path("/tmp/kaelab_bench/base_model"))  # from the cache: never trains here
    except Exception as err:  # no MNIST files: shapes only
        g = torch.Generator().manual_seed(0)
        return torch.randn(n, 784, generator=g).double().numpy(), f"gaussian cloud [{n}, 784] ({err})", None
    from kaelab.koopman.preprocessing import Chain, FrobeniusNormalize, MeanCenter, PCAProjection
    from kaelab.koopman.representations import extract

    x = base.datamodule.tensors("test")[0][:n]
    rep = extract(base.trajectory, x, ["input_layer"])["input_layer"]
    pts = Chain(MeanCenter(), PCAProjection(None), FrobeniusNormalize(100.0)).fit_transform(rep)
    desc = f"MNIST test representations [{len(pts)}, 784]: input_layer of the cached mnist_topology base model"
    desc += ", preprocessed (Sec. 3.3)"
    return pts.double().numpy(), desc, BETA1_EPS_MNIST


# GUDHI runs in a forked child that can be stopped at the time limit (its C++ loop cannot be interrupted)
_POINTS: np.ndarray | None = None


def _memory_limit() -> int:
    """Address-space cap for the GUDHI child: 40% of the available memory (at most 8 GiB), so that a
    Rips complex too large for the machine fails in the child instead of waking the OOM killer."""
    try:
        avail = next(int(ln.split()[1]) * 1024 for ln in open("/proc/meminfo") if ln.startswith("MemAvailable"))
    except (OSError, StopIteration):
        avail = 8 << 30
    return int(min(8 << 30, 0.4 * avail))


def _gudhi_child(idx, thresh, conn, mem_limit) -> None:
    import resource

    # the child starts with the parent's address space (torch reserves a lot of it): cap the growth
    vm = next(int(ln.split()[1]) * 1024 for ln in open("/proc/self/status") if ln.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + mem_limit, vm + mem_limit))
    try:
        import gudhi  # no torch in the forked child: its thread pool does not survive a fork

        pts = np.ascontiguousarray(_POINTS[idx])
        t0 = time.perf_counter()
        st = gudhi.RipsComplex(points=pts, max_edge_length=thresh).create_simplex_tree(max_dimension=1)
        st.compute_persistence(homology_coeff_field=2, persistence_dim_max=st.dimension() <= 0)
        bars = np.asarray(st.persistence_intervals_in_dimension(0), dtype=np.float64).reshape(-1, 2)
        conn.send((time.perf_counter() - t0, bars))
    except MemoryError:
        conn.send(None)
    conn.close()


def gudhi_timed(points: np.ndarray, idx: np.ndarray, thresh: float, limit: float):
    """(seconds, H0 bars) of GUDHI on points[idx], or None past ``limit`` seconds."""
    global _POINTS
    _POINTS = points
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_gudhi_child, args=(idx, thresh, child, _memory_limit()))
    proc.start()
    child.close()
    out = None
    if parent.poll(limit):
        try:
            out = parent.recv()  # None: out of memory
        except EOFError:  # the child died (e.g. std::bad_alloc)
            out = None
    proc.kill()
    proc.join()
    return out


def giotto_bars(points: np.ndarray, maxdim: int, thresh: float = np.inf) -> list[np.ndarray]:
    from gph import ripser_parallel

    dgms = ripser_parallel(points, maxdim=maxdim, thresh=thresh, n_threads=-1)["dgms"]
    return [np.asarray(d, dtype=np.float64) for d in dgms]


def bench_beta0(
    points: np.ndarray, repeats: int, gudhi_sizes: list[int], gudhi_limit: float, gudhi_rounds: int = 3
) -> dict:
    """The beta_0 curve: kaelab's MST against giotto-ph (``repeats`` interleaved rounds) and GUDHI
    (``gudhi_rounds`` rounds of up to ``gudhi_limit`` seconds each, on the largest subsample that fits)."""
    out: dict = {}
    n = len(points)
    grid_holder: dict = {}

    def mst():
        _, lengths = B.mst_edges(points)
        grid_holder["lengths"] = lengths
        return lengths

    def giotto():
        return giotto_bars(points, 0)[0]

    def mst_float64():
        return B.mst_edges(points, "float64")[1]

    med, times, res = interleaved({"mst": mst, "giotto": giotto, "mst_float64": mst_float64}, repeats)
    lengths = res["mst"]
    grid = np.linspace(0, lengths.max() * 1.05, 200)
    curve_mst = B.beta0_from_mst(lengths, grid)
    curve_giotto = B.betti_from_bars(res["giotto"], grid)
    gdeaths = np.sort(res["giotto"][np.isfinite(res["giotto"][:, 1]), 1])
    mdeaths = np.sort(lengths[lengths > 0])
    out.update(
        {
            "topology/beta0_curve/n_points": n,
            "topology/beta0_curve/mst_s": med["mst"],
            "topology/beta0_curve/giotto_s": med["giotto"],
            "topology/beta0_curve/mst_times_s": times["mst"],
            "topology/beta0_curve/giotto_times_s": times["giotto"],
            # medians of per-round ratios: the rounds run in alternation, so a slow moment falls on
            # both sides of a round (a ratio of medians moved 19% between two runs)
            "topology/beta0_curve/speedup_vs_giotto": _round_ratio(times, "giotto", "mst"),
            "topology/beta0_curve/speedup_vs_giotto_spread": _round_ratio_spread(times, "giotto", "mst"),
            "topology/beta0_curve/mst_float64_s": med["mst_float64"],
            "topology/beta0_curve/mst_float64_times_s": times["mst_float64"],
            "topology/beta0_curve/speedup_float64_vs_giotto": _round_ratio(times, "giotto", "mst_float64"),
            "topology/beta0_curve/float32_tree_equals_float64": bool(np.array_equal(lengths, res["mst_float64"])),
            "topology/beta0_curve/same_curve_as_giotto": bool(np.array_equal(curve_mst, curve_giotto)),
            "topology/beta0_curve/giotto_max_abs_death_diff": float(np.abs(gdeaths - mdeaths).max())
            if len(gdeaths) == len(mdeaths)
            else float("nan"),
            "topology/beta0_curve/longest_mst_edge": float(lengths.max()),
        }
    )
    # GUDHI: the largest subsample that finishes within the limit, then MST / giotto on the same subsample
    rng = np.random.default_rng(0)
    best = None
    for size in gudhi_sizes:
        size = min(size, n)
        idx = np.sort(rng.choice(n, size, replace=False)) if size < n else np.arange(n)
        thresh = float(B.mst_edges(points[idx])[1].max(initial=0.0))
        r = gudhi_timed(points, idx, thresh, gudhi_limit)
        out[f"topology/beta0_curve/gudhi_s_at_{size}"] = None if r is None else r[0]
        if r is None:
            break
        best = (size, idx, thresh, r)
        bigger = [s for s in gudhi_sizes if s > size]
        if size == n or not bigger or r[0] * (bigger[0] / size) ** 2 * 1.2 > gudhi_limit:
            break  # the next size would not finish in time (edges grow as n^2)
    if best is not None:
        size, idx, thresh, (gudhi_s, bars) = best
        sub = points[idx]

        def mst_s() -> float:  # the MST on the same subsample, right after a GUDHI round (median of 3)
            return statistics.median(_seconds(lambda: B.mst_edges(sub)) for _ in range(3))

        # per round: GUDHI (A), then the MST (B); the speedup is the median of per-round ratios
        rounds, ratios = [gudhi_s], [gudhi_s / mst_s()]
        for _ in range(min(repeats, gudhi_rounds) - 1):
            r = gudhi_timed(points, idx, thresh, gudhi_limit)
            if r is None:
                break
            rounds.append(r[0])
            ratios.append(r[0] / mst_s())
        med_sub, _, res_sub = interleaved(
            {"mst": lambda: B.mst_edges(sub)[1], "giotto": lambda: giotto_bars(sub, 0)[0]}, repeats
        )
        g = np.linspace(0, thresh * 1.05, 200)
        out.update(
            {
                "topology/beta0_curve/gudhi_n_points": size,
                "topology/beta0_curve/gudhi_s": statistics.median(rounds),
                "topology/beta0_curve/mst_s_same_subsample": med_sub["mst"],
                "topology/beta0_curve/giotto_s_same_subsample": med_sub["giotto"],
                "topology/beta0_curve/speedup_vs_gudhi_same_subsample": statistics.median(ratios),
                "topology/beta0_curve/speedup_vs_gudhi_spread": [min(ratios), max(ratios)],
                "topology/beta0_curve/same_curve_as_gudhi": bool(
                    np.array_equal(B.beta0_from_mst(res_sub["mst"], g), B.betti_from_bars(bars, g))
                ),
            }
        )
    return out


def bench_beta1(points: np.ndarray, eps: float, repeats: int) -> dict:
    fns = {
        "gudhi_collapse": lambda: B.betti_from_bars(B.diagrams_gudhi(points, 1, eps, collapse=True)[1], [eps])[0],
        "gudhi_no_collapse": lambda: B.betti_from_bars(B.diagrams_gudhi(points, 1, eps, collapse=False)[1], [eps])[0],
        "giotto": lambda: B.betti_from_bars(giotto_bars(points, 1, eps)[1], [eps])[0],
    }
    med, times, res = interleaved(fns, repeats)
    d2 = B.pairwise_sq_distances(torch.as_tensor(points))
    return {
        "topology/beta1/n_points": len(points),
        "topology/beta1/eps": eps,
        "topology/beta1/edges_at_eps": int(((d2 <= eps * eps).sum().item() - len(points)) // 2),
        "topology/beta1/value": {k: int(v) for k, v in res.items()},
        "topology/beta1/same_numbers": len({int(v) for v in res.values()}) == 1,
        **{f"topology/beta1/{k}_s": v for k, v in med.items()},
        **{f"topology/beta1/{k}_times_s": v for k, v in times.items()},
        "topology/beta1/collapse_speedup": _round_ratio(times, "gudhi_no_collapse", "gudhi_collapse"),
        "topology/beta1/gudhi_collapse_vs_giotto": _round_ratio(times, "giotto", "gudhi_collapse"),
    }


def degree_eps(points: np.ndarray, degree: float = 20.0) -> float:
    """The eps at which the Rips graph has ``degree`` edges per point on average."""
    d2 = B.pairwise_sq_distances(torch.as_tensor(points))
    off = d2[torch.triu(torch.ones_like(d2, dtype=torch.bool), diagonal=1)]
    q = min(1.0, degree / (len(points) - 1))
    return float(torch.quantile(off[torch.randperm(len(off))[:1_000_000]], q).sqrt())


def bench_topology(out: dict, quick: bool = False) -> dict:
    t0 = time.perf_counter()
    if quick:  # smoke test: tiny inputs, numbers not meaningful
        g = torch.Generator().manual_seed(0)
        points, desc = torch.randn(300, 16, generator=g).double().numpy(), "gaussian cloud [300, 16] (quick)"
        t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
        circle = np.stack([np.cos(t), np.sin(t)], 1) + np.random.default_rng(0).normal(scale=0.03, size=(120, 2))
        sub, eps = circle, 0.5
    else:
        points, desc, eps = load_points(10000)
        sub = points[np.sort(np.random.default_rng(1).choice(len(points), min(2000, len(points)), replace=False))]
        if eps is not None:  # the paper's eps; on a 2,000-point subsample its graph may have no edges
            d2 = B.pairwise_sq_distances(torch.as_tensor(sub))
            if int((d2 <= eps * eps).sum()) - len(sub) < 2 * len(sub):
                eps = None
        if eps is None:  # no (useful) paper setting for this input: about 20 neighbours per point
            eps = degree_eps(sub)
    res: dict = {"topology/input": desc, "topology/threads": torch.get_num_threads()}
    warm = points[:50]  # first calls load libraries and start thread pools: not part of the timings
    B.mst_edges(warm), giotto_bars(warm, 1, np.inf), B.diagrams_gudhi(warm, 1, np.inf)
    res.update(
        bench_beta0(
            points,
            repeats=1 if quick else 5,
            gudhi_sizes=[300] if quick else [1000, 2000, 4000, 6000, 8000, 10000],
            gudhi_limit=20.0 if quick else GUDHI_LIMIT_S,
        )
    )
    res.update(bench_beta1(sub, eps, repeats=1 if quick else 3))
    res["topology/bench_time_s"] = time.perf_counter() - t0
    out.update(res)
    return res


if __name__ == "__main__":
    result = bench_topology({}, quick="--quick" in sys.argv)
    path = REPO / "outputs" / "bench" / "topology.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(json.dumps(result, indent=2, sort_keys=True))
    print(f"wrote {path}")
