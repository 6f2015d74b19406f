"""Benchmark of the DMD layer replacement: PyDMD fit time and hybrid-network inference throughput.

``bench_dmd(out)`` adds its numbers to ``out`` (scripts/bench.py calls it); run standalone it writes
``outputs/bench/dmd.json``. The workload has the shapes of ``+experiment=mnist_dmd`` (MNIST MLP
784-256-128-64-32-10, hidden layer 1 scaled into 10 layers of width 256, so 12 states; h = 2
delays, full rank, 3000 fitting trajectories) but uses an untrained network and random inputs: the
timings depend on the shapes only, so the benchmark needs no data, no training and no cache.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kaelab.dmd.hybrid import HybridNet  # noqa: E402
from kaelab.dmd.layer_scaling import new_layers  # noqa: E402
from kaelab.dmd.operator import fit_delay_dmd  # noqa: E402
from kaelab.dmd.study import collect_states  # noqa: E402
from kaelab.models import MLP, Trajectory  # noqa: E402

BATCH, H, LAYER, N_NEW = 4096, 2, 1, 10


def _throughput(model: torch.nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """Best-of-``repeats`` samples/s of ``model`` over ``x`` in batches of BATCH (after a warm-up)."""
    with torch.no_grad():
        model(x[:BATCH])
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for xb in x.split(BATCH):
                model(xb)
            best = min(best, time.perf_counter() - t0)
    return len(x) / best


def bench_dmd(out: dict, quick: bool = False) -> None:
    """Add ``dmd/*`` timings: DMD fit time (s), hybrid and original inference throughput (samples/s).

    ``quick``: 300 fitting trajectories and 4096 inference samples (a smoke test, numbers not
    comparable with the full run's 3000 and 20000)."""
    n_fit, n_infer, repeats = (300, BATCH, 1) if quick else (3000, 20000, 3)
    torch.manual_seed(0)
    net = MLP(784, [256, 128, 64, 32], 10).eval()
    layers = new_layers(256, N_NEW, seed=0).eval()
    x_fit, x_inf = torch.randn(n_fit, 784), torch.randn(n_infer, 784)
    traj = Trajectory.of(net, x_fit[:2]).scaled(LAYER, list(layers)).eval()
    t0 = time.perf_counter()
    S = collect_states(traj, x_fit)
    collect_s = time.perf_counter() - t0
    fit = fit_delay_dmd(S, h=H, rank=-1)
    hybrid = HybridNet(traj, fit.operator, (0, traj.n_states - 1), "reduced").eval()
    z = torch.randn(BATCH, fit.operator.U.shape[0])
    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(20):
            fit.operator.rollout(z, hybrid.layers_replaced)
        rollout_ms = (time.perf_counter() - t0) / 20 * 1e3
    out.update(
        {
            "dmd/fit_time_s": fit.fit_time_s,
            "dmd/collect_states_s": collect_s,
            "dmd/fit_pairs": fit.n_pairs,
            "dmd/delay_dim": int(fit.operator.U.shape[0]),
            "dmd/rank": fit.operator.rank,
            "dmd/layers_replaced": hybrid.layers_replaced,
            "dmd/rollout_ms_per_batch": rollout_ms,
            "dmd/hybrid_samples_per_s": _throughput(hybrid, x_inf, repeats),
            "dmd/scaled_samples_per_s": _throughput(traj, x_inf, repeats),
            "dmd/original_samples_per_s": _throughput(net, x_inf, repeats),
            "dmd/n_fit_trajectories": n_fit,
            "dmd/batch_size": BATCH,
            "dmd/torch_threads": torch.get_num_threads(),
        }
    )


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workload (smoke test)")
    parser.add_argument("--threads", type=int, default=None, help="torch (and BLAS) threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out: dict = {}
    bench_dmd(out, quick=args.quick)
    path = REPO / "outputs" / "bench" / "dmd.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, sort_keys=True))
    print(json.dumps(out, indent=2, sort_keys=True))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
