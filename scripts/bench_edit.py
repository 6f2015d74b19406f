"""Benchmark of the edit stage: one MNIST-sized class-unlearning edit (Algorithm 1 + EMMET).

``bench_edit(out, probe)`` adds its numbers to ``out`` (scripts/bench.py calls it); run standalone
it writes ``outputs/bench/edit.json``. The workload has the shapes of ``+experiment=mnist_edit``:
a KAE 784 -> 1000 -> 800 (p = 800), 55,000 training pairs, one class of ~5,500 forgotten keys and
~49,500 preserved ones, the reference's mu = lambda = 0.1. The weights are untrained: EMMET's cost
depends on the shapes only, so the benchmark needs no data, no training and no cache.

Compared, interleaved (A, B, A, B, ...) and reported as medians:
* ``unlearn_default_s``: one edit as ``task=edit`` runs it by default (``nearest_retained_centroid``
  targets) on the KAE's cached per-class key statistics: encoding the forgotten samples, K^-1 keys,
  targets, EMMET; ``stats_build_s``: building those statistics, once per KAE (55,000 pairs);
* ``unlearn_s``: all of Algorithm 1 without statistics, with the reference's nearest-retained
  targets (encoding all 55,000 pairs, a 5,500 x 49,500 nearest-neighbour search, EMMET);
* ``emmet_pxp_s``: kaelab's EMMET (p x p push-through form, Cholesky) against ``emmet_ref_s``, the
  reference's E x E form with an explicit float64 inverse of the 5,500 x 5,500 system;
* the retrain it replaces: training the MNIST ResMLP for 30 epochs on the 49,500 retained images,
  estimated from a training step of the ResMLP (batch 128, SGD, by hand) timed right before each
  edit (the median of 8 steps; each edit has its own), so that ``retrain_over_edit`` is the median of per-repeat
  ratios (two runs of ``make bench`` had given 440x and 366x when the throughput came from another
  moment of the run); ``retrain_over_edit_lightning`` uses bench.py's Lightning throughput.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kaelab.editing.emmet import emmet  # noqa: E402
from kaelab.editing.statistics import key_statistics  # noqa: E402
from kaelab.editing.unlearning import unlearn_classes  # noqa: E402
from kaelab.koopman.kae import KoopmanAutoencoder  # noqa: E402


def reference_emmet(W, K_E, V_E, K0, mu, lam):
    """The reference implementation's way: explicit inverses, the E x E system."""
    W, K_E, V_E, K0 = (t.double() for t in (W, K_E, V_E, K0))
    C0inv = torch.linalg.inv(K0 @ K0.T + mu * torch.eye(K0.shape[0], dtype=torch.float64))
    A = K_E.T @ C0inv @ K_E + lam * torch.eye(K_E.shape[1], dtype=torch.float64)
    return W + (V_E - W @ K_E) @ torch.linalg.inv(A) @ K_E.T @ C0inv


def resmlp_step(quick: bool):
    """One SGD training step of the MNIST ResMLP (batch 128), the unit of the retrain it replaces."""
    from kaelab.models import ResMLP

    width = 64 if quick else 784
    net = ResMLP(in_dim=784, width=width, n_blocks=4, out_dim=10)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    return step


def bench_edit(out: dict, quick: bool = False, probe: float | None = None, repeat: int | None = None) -> dict:
    repeat = repeat or (2 if quick else 7)
    torch.manual_seed(0)
    n, n_cls = (6000, 10) if quick else (55000, 10)
    dim, hidden, p = (64, 80, 64) if quick else (784, 1000, 800)
    kae = KoopmanAutoencoder(dim, [hidden], p, 10, dict(recon=1, linear=1, state=1, iso=1e-3))
    with torch.no_grad():
        kae.koopman.G.add_(0.05 * torch.randn(p, p))
    x_i, x_j = torch.randn(n, dim) * 0.4, torch.randn(n, dim) * 0.4
    labels = torch.arange(n) % n_cls
    K = torch.linalg.matrix_exp(kae.koopman.G.detach().double())
    with torch.no_grad():
        keys_all = kae.encoder(x_i).double()
    mask = labels == 4
    K_E, K0 = keys_all[mask].T, keys_all[~mask].T
    V_E = K @ K0[:, : K_E.shape[1]]  # nearest-retained-like targets: post-images of retained keys
    times: dict[str, list[float]] = {
        "unlearn_s": [],
        "emmet_pxp_s": [],
        "emmet_ref_s": [],
        "stats_build_s": [],
        "unlearn_default_s": [],
    }
    step_train = resmlp_step(quick)

    def train_step_s() -> float:
        """The median of 8 training steps, timed right before the edit it is paired with."""
        step_train()  # warm
        steps = []
        for _ in range(8):
            t = time.perf_counter()
            step_train()
            steps.append(time.perf_counter() - t)
        return statistics.median(steps)

    times["train_step_s"], times["train_step_s_ref"] = [], []
    for _ in range(repeat):  # interleaved A, B, A, B
        t = time.perf_counter()
        stats = key_statistics(kae, x_i, x_j, labels, n_cls)
        times["stats_build_s"].append(time.perf_counter() - t)
        times["train_step_s"].append(train_step_s())
        t = time.perf_counter()
        unlearn_classes(kae, x_i, x_j, labels, [4], n_cls, targets="nearest_retained_centroid", stats=stats)
        times["unlearn_default_s"].append(time.perf_counter() - t)
        times["train_step_s_ref"].append(train_step_s())
        t = time.perf_counter()
        edit = unlearn_classes(kae, x_i, x_j, labels, [4], n_cls, targets="nearest_retained")
        times["unlearn_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        W_a, _ = emmet(K, K_E, V_E, K0, mu=0.1, lam=0.1, form="pxp")
        times["emmet_pxp_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        W_b = reference_emmet(K, K_E, V_E, K0, 0.1, 0.1)
        times["emmet_ref_s"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {f"edit_mnist/{k}": v for k, v in med.items()}
    # ratios of interleaved timings: the median of per-repeat ratios (one slow moment moves one pair)
    per_pair = [r / p for r, p in zip(times["emmet_ref_s"], times["emmet_pxp_s"], strict=True)]
    res["edit_mnist/n_edit_keys"] = int(mask.sum())
    res["edit_mnist/n_preserved_keys"] = int((~mask).sum())
    res["edit_mnist/form"] = edit.info.form
    res["edit_mnist/emmet_speedup_vs_reference"] = statistics.median(per_pair)
    res["edit_mnist/max_abs_diff_vs_reference"] = (W_a.double() - W_b).abs().max().item()
    retrain_steps = 30 * -(-(n - int(mask.sum())) // 128)  # 30 epochs of the retained images, batch 128
    res["edit_mnist/retrain_estimate_s"] = retrain_steps * med["train_step_s"]
    for key, step_times, edit_times in (
        ("retrain_over_edit", "train_step_s", "unlearn_default_s"),
        ("retrain_over_edit_reference_targets", "train_step_s_ref", "unlearn_s"),
    ):
        # each edit against the training steps timed right before it
        pairs = [retrain_steps * a / b for a, b in zip(times[step_times], times[edit_times], strict=True)]
        res[f"edit_mnist/{key}"] = statistics.median(pairs)
    if "resmlp_mnist/samples_per_s" in out:  # bench.py's Lightning throughput, from another moment of the run
        retrain = 30 * (n - int(mask.sum())) / out["resmlp_mnist/samples_per_s"]
        res["edit_mnist/retrain_over_edit_lightning"] = retrain / med["unlearn_default_s"]
    out.update(res)
    return res


if __name__ == "__main__":
    result = bench_edit({}, quick="--quick" in sys.argv)
    path = REPO / "outputs" / "bench" / "edit.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(json.dumps(result, indent=2, sort_keys=True))
