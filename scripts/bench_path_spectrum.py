"""Benchmark of the KAE's path loss and of the operator's spectral analysis (MNIST shapes).

``bench_path_spectrum(out, quick)`` adds its numbers to ``out`` (scripts/bench.py calls it); run
standalone it writes ``outputs/bench/path_spectrum.json``. Untrained weights: the cost depends on the
shapes only.

* ``kae_path/step_s_plain`` vs ``kae_path/step_s_path``: one MNIST-KAE optimisation step (784 ->
  1000 -> 800, k = 10, batch 512) without and with the path loss over the ResMLP's 3 intermediate
  blocks (steps 3, 5, 8), timed interleaved (A, B, A, B, ...); ``kae_path/overhead`` is the median
  over rounds of path / plain - 1 (the issue's goal: < 0.3), ``overhead_split`` the same with
  ``kae.path.rows=split``; ``kae_path_1thread/*`` the same at one thread (a sweep job's setting);
  ``kae_path/flops_*`` the FLOPs of one step of each (``torch.utils.flop_counter``: no slow moment
  moves them);
* ``spectrum_mnist/decompose_s`` (eigendecomposition of the 800 x 800 generator),
  ``spectrum_mnist/table_s`` (the class x mode energy table, cond(V), effective rank and the
  per-mode statistics on 10,000 observables, as ``task=spectrum`` computes them) and their sum
  ``spectrum_mnist/total_s`` (goal: < 5 s).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kaelab.koopman.kae import KoopmanAutoencoder  # noqa: E402
from kaelab.koopman.spectrum import decompose  # noqa: E402
from kaelab.koopman.spectrum_pipeline import MAX_SAMPLES, spectrum_report  # noqa: E402


def bench_path(quick: bool, repeat: int) -> dict:
    dim, hidden, p, batch = (64, 80, 64, 64) if quick else (784, 1000, 800, 512)
    steps = [3, 5, 8]
    lambdas = dict(recon=1, linear=1, state=1, iso=1e-3)
    torch.manual_seed(0)
    plain = KoopmanAutoencoder(dim, [hidden], p, 10, lambdas)
    path = KoopmanAutoencoder(dim, [hidden], p, 10, lambdas, path_lambda=1.0, path_steps=steps)
    split = KoopmanAutoencoder(dim, [hidden], p, 10, lambdas, path_lambda=1.0, path_steps=steps, path_rows="split")
    path.load_state_dict(plain.state_dict())
    split.load_state_dict(plain.state_dict())
    G = plain.koopman.G.detach() + 0.3 * torch.randn(p, p, generator=torch.Generator().manual_seed(1)) / math.sqrt(p)
    for kae in (plain, path, split):  # a trained-looking G rather than the identity init
        with torch.no_grad():
            kae.koopman.G.copy_(G)
    xi, xj, blocks = torch.randn(batch, dim), torch.randn(batch, dim), torch.randn(batch, len(steps), dim)
    opts = {id(k): torch.optim.AdamW(k.parameters(), lr=1e-5) for k in (plain, path, split)}

    def step(kae, with_blocks):
        opt = opts[id(kae)]
        opt.zero_grad(set_to_none=True)
        kae.total_loss(kae.loss_terms(xi, xj, blocks=blocks if with_blocks else None)).backward()
        opt.step()

    for _ in range(2):  # warm-up
        step(plain, False)
        step(path, True)
        step(split, True)
    times: dict[str, list[float]] = {"step_s_plain": [], "step_s_path": [], "step_s_path_split": []}
    for _ in range(repeat):
        for name, kae, wb in (
            ("step_s_plain", plain, False),
            ("step_s_path", path, True),
            ("step_s_path_split", split, True),
        ):
            t = time.perf_counter()
            step(kae, wb)
            times[name].append(time.perf_counter() - t)
    med = {f"kae_path/{k}": statistics.median(v) for k, v in times.items()}
    for name, kae, wb in (("plain", plain, False), ("path", path, True), ("path_split", split, True)):
        with FlopCounterMode(display=False) as counter:
            kae.total_loss(kae.loss_terms(xi, xj, blocks=blocks if wb else None)).backward()
        kae.zero_grad(set_to_none=True)
        med[f"kae_path/flops_{name}"] = counter.get_total_flops()
    med["kae_path/flops_ratio_path"] = med["kae_path/flops_path"] / med["kae_path/flops_plain"]
    med["kae_path/flops_ratio_split"] = med["kae_path/flops_path_split"] / med["kae_path/flops_plain"]
    # the overheads are medians of per-round ratios (a slow moment moves one round, not a median)
    for key, name in (("overhead", "step_s_path"), ("overhead_split", "step_s_path_split")):
        per_round = sorted(b / a - 1 for a, b in zip(times["step_s_plain"], times[name], strict=True))
        med[f"kae_path/{key}"] = statistics.median(per_round)
        med[f"kae_path/{key}_spread"] = [per_round[0], per_round[-1]]
    med["kae_path/batch"] = batch
    med["kae_path/n_blocks"] = len(steps)
    return med


def bench_spectrum(quick: bool, repeat: int) -> dict:
    p, n, n_cls = (64, 2000, 10) if quick else (800, 55000, 10)
    g = torch.Generator().manual_seed(0)
    G = torch.eye(p, dtype=torch.float64) + 0.3 * torch.randn(p, p, generator=g, dtype=torch.float64) / math.sqrt(p)
    z = torch.randn(n, p, generator=g, dtype=torch.float64)
    labels = torch.arange(n) % n_cls
    K = torch.linalg.matrix_exp(G)
    times: dict[str, list[float]] = {"decompose_s": [], "table_s": []}
    for _ in range(repeat):
        t = time.perf_counter()
        spec = decompose(G, 10)
        times["decompose_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        m, _, _ = spectrum_report(spec, K, z, labels, n_cls)
        times["table_s"].append(time.perf_counter() - t)
    med = {f"spectrum_mnist/{k}": statistics.median(v) for k, v in times.items()}
    med["spectrum_mnist/total_s"] = med["spectrum_mnist/decompose_s"] + med["spectrum_mnist/table_s"]
    med["spectrum_mnist/p"] = p
    med["spectrum_mnist/samples_for_mode_stats"] = min(n, MAX_SAMPLES)
    med["spectrum_mnist/reconstruction_rel_err"] = m["spectrum/reconstruction_rel_err"]
    return med


def bench_path_spectrum(out: dict, quick: bool = False) -> dict:
    res = {**bench_path(quick, 3 if quick else 15), **bench_spectrum(quick, 1 if quick else 3)}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = bench_path(quick, 3 if quick else 9)
    finally:
        torch.set_num_threads(before)
    res.update({k.replace("kae_path/", "kae_path_1thread/"): v for k, v in one.items() if "flops" not in k})
    out.update(res)
    return res


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    res = bench_path_spectrum({"threads": torch.get_num_threads()}, quick=quick)
    path = REPO / "outputs" / "bench" / "path_spectrum.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2, sort_keys=True))
    print(json.dumps(res, indent=2, sort_keys=True))
