#!/usr/bin/env python
"""kaelab benchmarks -> outputs/bench/bench.json (one JSON object; ``make bench``).

Everything is compared against limits measured in the same run:
* ``probe``: the machine's matmul FLOP/s (torch.mm on square matrices, the best of a few sizes), in
  fp32 (``matmul_flops``) and in bf16 (``matmul_flops_bf16``; ``probe_bf16_over_fp32``: what a CPU
  with native bf16 gains). Each training workload is measured at each precision against the probe
  of its own precision (``resmlp_mnist/`` and ``kae_mnist/`` fp32, ``resmlp_mnist_bf16/`` and
  ``kae_mnist_bf16/`` bf16-mixed: their ``fraction_of_probe`` is the fraction of the real limit).
  A workload's ``fraction_of_probe`` is never measured against one probe taken at another moment
  (a busy moment makes the workload look faster than the machine): the probe (A) and the workload
  (B) are timed in alternation, A B A B ..., and the result is the median of the per-pair ratios,
  with their spread (``*_spread``: min, max). A ratio above 1.0 (faster than the machine's matmul)
  is a measurement error and is flagged (``*_measurement_error``);
* base-model training (MNIST ResMLP at batch 128, Yin-Yang ResMLP at batch 512) through the real
  Lightning loop and datamodule, against the same recipe written as a plain PyTorch loop (the
  same SGD parameter groups, per-step LR schedule and torchmetrics train accuracy, a fresh batch
  gathered from a shuffled permutation each step): samples/s, FLOP/s (analytic count), fraction of
  the probe, and the framework's share of a step (``framework_overhead``). The share against a
  minimal loop (one fixed batch, one parameter group, no schedule, no accuracy), which also charges
  the recipe to the framework, is ``framework_overhead_vs_minimal_loop`` (what this bench reported
  as ``framework_overhead`` before 2026-11-26);
* the MNIST KAE step (batch 512): samples/s, FLOP/s, time split into matrix exponential
  (forward + backward) and network, and kaelab's expm against torch.linalg.matrix_exp;
* the DMD stage (scripts/bench_dmd.py): fit time and hybrid inference throughput;
* the edit stage (scripts/bench_edit.py): an MNIST-sized unlearning edit against the retrain it replaces.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from torchmetrics.classification import MulticlassAccuracy  # noqa: E402

from kaelab.data import InMemoryDataModule  # noqa: E402
from kaelab.koopman.kae import KoopmanAutoencoder  # noqa: E402
from kaelab.koopman.operator import expm, expm_squarings  # noqa: E402
from kaelab.models import Classifier  # noqa: E402
from kaelab.models.classifier import decay_param_groups  # noqa: E402
from kaelab.precision import cpu_has_bf16  # noqa: E402
from kaelab.schedules import triangular_lr  # noqa: E402


def timed(fn, repeat: int, warmup: int = 2) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def matmul_probe(sizes=(512, 1024, 2048), dtype: torch.dtype = torch.float32) -> dict:
    """The machine's matmul FLOP/s in ``dtype`` (keys ``matmul_flops`` for fp32, ``matmul_flops_bf16``...)."""
    best = {}
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        dt = timed(lambda a=a, b=b: a @ b, repeat=10)
        best[str(n)] = 2 * n**3 / dt
    key = "matmul_flops" + DTYPE_SUFFIX[dtype]
    return {key: max(best.values()), f"{key}_by_size": best}


# the probe and the workloads of each precision: bf16 keys carry a suffix, fp32 ones none
DTYPE_SUFFIX = {torch.float32: "", torch.bfloat16: "_bf16"}
AUTOCAST = {"32-true": torch.float32, "bf16-mixed": torch.bfloat16}


def autocast(precision: str):
    """The region a hand-written loop runs its forward in, as Lightning's ``precision`` does."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


class Probe:
    """The matmul probe at one size, to be timed again next to each workload timing."""

    def __init__(self, n: int, repeat: int = 3, dtype: torch.dtype = torch.float32):
        self.n, self.repeat, self.dtype = n, repeat, dtype
        self.a, self.b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)

    @classmethod
    def at(cls, by_size: dict[str, float], n: int = 1024, dtype: torch.dtype = torch.float32) -> Probe:
        """The probe at size ``n`` (the largest measured size below it in a quick run). One fixed
        size, not the fastest one: at 1 thread 512 and 1024 run within a few percent of each other
        and the fastest flipped between runs, moving every fraction_of_probe with it."""
        sizes = sorted(int(k) for k in by_size)
        return cls(n if n in sizes else max([s for s in sizes if s <= n] or sizes[:1]), dtype=dtype)

    def flops(self) -> float:
        """The probe's FLOP/s now (median of a few products, after one warm-up)."""
        return 2 * self.n**3 / timed(lambda: self.a @ self.b, repeat=self.repeat, warmup=1)

    def once(self) -> float:
        """The FLOP/s of a single product (no warm-up: for sampling the probe between workload steps)."""
        t = time.perf_counter()
        self.a @ self.b
        return 2 * self.n**3 / (time.perf_counter() - t)


def interleaved_fraction(prefix: str, probe: Probe, workload_flops_per_s) -> dict:
    """``fraction_of_probe`` as the median of per-pair ratios: for each pair, the probe is timed (A)
    and then ``workload_flops_per_s()`` measures the workload (B); ratio = B / A.

    ``workload_flops_per_s`` is an iterable of the workload's FLOP/s, one per pair (each measured
    when the iteration asks for it, right after its probe)."""
    ratios = []
    it = iter(workload_flops_per_s)
    while True:
        probe_flops = probe.flops()
        try:
            work = next(it)
        except StopIteration:
            break
        ratios.append(work / probe_flops)
    ratios.sort()
    med = statistics.median(ratios)
    return {
        f"{prefix}fraction_of_probe": med,
        f"{prefix}fraction_of_probe_spread": [ratios[0], ratios[-1]],
        f"{prefix}fraction_of_probe_pairs": len(ratios),
        # faster than the machine's matmul: the probe ran in a slow moment, not a real result
        f"{prefix}fraction_of_probe_measurement_error": med > 1.0,
    }


def _timed_runs(fn, flops: float, pairs: int, repeat: int):
    """The workload's FLOP/s, ``pairs`` times (each the median of ``repeat`` calls)."""
    for _ in range(pairs):
        yield flops / timed(fn, repeat=repeat, warmup=1)


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def linear_train_flops(net: nn.Module, batch: int) -> float:
    """Analytic FLOPs of one training step of the Linear layers (fwd 2MK, weight grad 2MK, input grad
    2MK except for the first layer, whose input needs no gradient)."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    macs = [m.in_features * m.out_features for m in linears]
    return batch * (2 * sum(macs) * 2 + 2 * (sum(macs) - macs[0]))


def bench_classifier(
    name: str,
    net_cfg: dict,
    in_dim: int,
    classes: int,
    batch: int,
    steps: int,
    probe: Probe,
    fits: int = 5,
    precision: str = "32-true",
) -> dict:
    """Real Lightning training steps vs. the same steps in a bare PyTorch loop, ``fits`` times, at
    ``precision`` (Lightning's name; the hand-written loops run their forward under the same autocast)."""
    n = batch * steps
    x, y = torch.randn(n, in_dim), torch.randint(0, classes, (n,))
    optim = dict(lr=0.05, momentum=0.9, weight_decay=5e-4, warmup_frac=0.2)

    bare = Classifier(net_cfg, optim, classes).net
    opt = torch.optim.SGD(bare.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    xb, yb = x[:batch], y[:batch]

    def bare_step():
        opt.zero_grad(set_to_none=True)
        with autocast(precision):
            loss = nn.functional.cross_entropy(bare(xb), yb)
        loss.backward()
        opt.step()

    recipe = Classifier(net_cfg, optim, classes).net
    opt_r = torch.optim.SGD(decay_param_groups(recipe, 5e-4), lr=0.05, momentum=0.9)
    sched_r = triangular_lr(opt_r, 10**9, 0.2)
    acc_r = MulticlassAccuracy(classes, average="micro", validate_args=False)
    order = torch.randperm(n)
    cursor = [0]

    def recipe_step():
        """The Classifier's training step and the datamodule's batching, by hand."""
        i = cursor[0] = (cursor[0] + 1) % steps
        idx = order[i * batch : (i + 1) * batch]
        xr, yr = x[idx], y[idx]
        opt_r.zero_grad(set_to_none=True)
        with autocast(precision):
            logits = recipe(xr)
            loss = nn.functional.cross_entropy(logits, yr)
        loss.backward()
        opt_r.step()
        sched_r.step()
        acc_r.update(logits.detach(), yr)

    flops = linear_train_flops(bare, batch)
    dm = InMemoryDataModule({"train": (x, y)}, batch_size=batch)

    class PairedSteps(L.Callback):
        """Times every Lightning step (one batch's start to the next's: everything Lightning does
        per step) and, in the gap before each, one step of each hand-written loop: A, B, C, A, B,
        C at the scale of a single step, so that the machine's slow moments (seconds long on this
        shared VM, and as large as the effect) fall on both sides alike. After 5 warm-up steps.
        Every ``PROBE_EVERY`` steps the gap also holds one product of the matmul probe, so that the
        fit's fraction of the probe compares it with the probe of the same seconds (one probe
        before the fit had put a ratio above 1.0 in a run's spread)."""

        PROBE_EVERY = 4

        def __init__(self):
            self.lightning: list[float] = []
            self.recipe: list[float] = []
            self.minimal: list[float] = []
            self.probe: list[float] = []
            self.t = None

        def on_train_batch_start(self, trainer, *_):
            now = time.perf_counter()
            if trainer.global_step < 5:
                return
            if self.t is not None:
                self.lightning.append(now - self.t)
            self.t = None
            if trainer.global_step % self.PROBE_EVERY == 0:
                # a gap of its own, and the Lightning step after it is not timed: the probe's
                # matrices evict the caches that the next step would otherwise find warm
                self.probe.append(probe.once())
                return
            for fn, into in ((recipe_step, self.recipe), (bare_step, self.minimal)):
                t = time.perf_counter()
                fn()
                into.append(time.perf_counter() - t)
            self.t = time.perf_counter()

    def paired_fit() -> tuple[float, float, float, float]:
        """One real Lightning fit (1 epoch of ``steps`` steps): median seconds per step of
        Lightning, the recipe by hand and the minimal loop, over adjacent steps, and the median
        FLOP/s of the probe between them."""
        timer = PairedSteps()
        trainer = L.Trainer(
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
            limit_val_batches=0,
            precision=precision,
        )
        trainer.fit(Classifier(net_cfg, optim, classes), datamodule=dm)
        probe_flops = timer.probe or [probe.flops()]  # a very short fit (--quick) may hold no probe
        return tuple(statistics.median(v) for v in (timer.lightning, timer.recipe, timer.minimal, probe_flops))  # type: ignore[return-value]

    # per fit: Lightning's steps interleaved with the hand-written loops' steps and the probe; the
    # fraction of the probe and the framework's share are medians over fits of per-fit ratios
    probe.flops()  # warm-up
    ratios, step_ratios, overheads, minimal, steps_l, steps_r, steps_b = [], [], [], [], [], [], []
    for _ in range(fits):
        dt_l, dt_r, dt_b, probe_flops = paired_fit()
        ratios.append(flops / dt_l / probe_flops)
        step_ratios.append(dt_l / dt_r)
        overheads.append(max(0.0, (dt_l - dt_r) / dt_l))
        minimal.append(max(0.0, (dt_l - dt_b) / dt_l))
        steps_l.append(dt_l)
        steps_r.append(dt_r)
        steps_b.append(dt_b)
    ratios.sort()
    overheads.sort()
    minimal.sort()
    step_lightning = statistics.median(steps_l)
    out = {
        f"{name}/batch": batch,
        f"{name}/step_s": step_lightning,
        f"{name}/samples_per_s": batch / step_lightning,
        f"{name}/flops": flops / step_lightning,
        f"{name}/fraction_of_probe": statistics.median(ratios),
        f"{name}/fraction_of_probe_spread": [ratios[0], ratios[-1]],
        f"{name}/fraction_of_probe_pairs": len(ratios),
        f"{name}/fraction_of_probe_measurement_error": statistics.median(ratios) > 1.0,
        f"{name}/recipe_torch_step_s": statistics.median(steps_r),
        f"{name}/bare_torch_step_s": statistics.median(steps_b),
        # Lightning's step over the recipe's (1 + the overhead as a fraction of the recipe's step):
        # the ratio two runs are compared on; a 3% overhead that moves 0.8 points is noise in it
        f"{name}/framework_step_ratio": statistics.median(step_ratios),
        f"{name}/framework_overhead": statistics.median(overheads),
        f"{name}/framework_overhead_spread": [overheads[0], overheads[-1]],
        f"{name}/framework_overhead_vs_minimal_loop": statistics.median(minimal),
        f"{name}/framework_overhead_vs_minimal_loop_spread": [minimal[0], minimal[-1]],
    }
    # each pair: the probe, then the median of 16 minimal-loop steps (a Yin-Yang step is ~5 ms, the
    # probe ~30 ms; with 4 steps a pair's ratio was at the mercy of one slow moment)
    pairs = max(5, steps // 8)
    out.update(interleaved_fraction(f"{name}/bare_torch_", probe, _timed_runs(bare_step, flops, pairs, repeat=16)))
    return out


def bench_kae(
    batch: int, steps: int, probe: Probe, dim=784, hidden=1000, latent=800, k=10, precision: str = "32-true"
) -> dict:
    """One MNIST-KAE optimisation step, split into matrix exponential and network, at ``precision``
    (under bf16-mixed the network's products run in bf16, the operator's expm in fp32: kaelab.precision).
    Keys ``kae_mnist/`` (fp32) or ``kae_mnist_bf16/``."""
    name = "kae_mnist" + DTYPE_SUFFIX[AUTOCAST[precision]]
    torch.manual_seed(0)
    kae = KoopmanAutoencoder(dim, [hidden], latent, k, dict(recon=1, linear=1, state=1, iso=1e-3))
    with torch.no_grad():  # a trained-looking G (||G||_1 ~ 8) rather than the identity init
        kae.koopman.G.add_(0.3 * torch.randn(latent, latent) / math.sqrt(latent))
    opt = torch.optim.AdamW(kae.parameters(), lr=1e-4)
    xi, xj = torch.randn(batch, dim), torch.randn(batch, dim)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(precision):
            loss = kae.total_loss(kae.loss_terms(xi, xj))
        loss.backward()
        opt.step()

    step_s = timed(step, repeat=steps)
    G = kae.koopman.G.detach().clone().requires_grad_()
    probe_grad = torch.randn(latent, latent)

    def op_step(f):
        G.grad = None
        (f(G) * probe_grad).sum().backward()

    # kaelab's expm (A) and torch's (B) in alternation, A B A B ...; the speedup is the median of
    # per-round ratios (timed one after the other, 5.4x and 6.4x in two consecutive runs)
    for f in (expm, torch.linalg.matrix_exp):
        op_step(f)  # warm-up
    expm_times, torch_times, speedups = [], [], []
    for _ in range(7):
        for f, into in ((expm, expm_times), (torch.linalg.matrix_exp, torch_times)):
            t = time.perf_counter()
            op_step(f)
            into.append(time.perf_counter() - t)
        speedups.append(torch_times[-1] / expm_times[-1])
    expm_s, torch_expm_s = statistics.median(expm_times), statistics.median(torch_times)
    # analytic FLOPs: encoder on 2B rows, decoder on 3B rows (fwd + 2x bwd), K z, distances, expm
    enc = dim * hidden + hidden * latent
    # fwd + weight grads + input grads, except the encoder's first layer (x needs no gradient)
    net_flops = 6 * (2 * batch + 3 * batch) * enc - 2 * (2 * batch) * dim * hidden + 6 * batch * latent**2
    dist_flops = 2 * (2 * batch * batch * latent) * 3 + 2 * (2 * batch * batch * dim)
    squarings = expm_squarings(kae.koopman.G)
    # forward: A^2, A^3, A^4, the A^5 for the bound (no grad), 2 Horner products, s squarings;
    # backward: 2 matmuls per forward product that carries a gradient
    expm_flops = (1 + 3 * (5 + squarings)) * 2 * latent**3
    total = net_flops + dist_flops + expm_flops
    pairs = interleaved_fraction(f"{name}/", probe, _timed_runs(step, total, max(5, steps), repeat=1))
    return {
        **pairs,
        f"{name}/batch": batch,
        f"{name}/step_s": step_s,
        f"{name}/samples_per_s": batch / step_s,
        f"{name}/flops": total / step_s,
        f"{name}/expm_fwd_bwd_s": expm_s,
        f"{name}/expm_squarings": squarings,
        f"{name}/network_s": step_s - expm_s,
        f"{name}/expm_share_of_step": expm_s / step_s,
        f"{name}/torch_matrix_exp_fwd_bwd_s": torch_expm_s,
        f"{name}/expm_speedup_vs_torch": statistics.median(speedups),
        f"{name}/expm_speedup_vs_torch_spread": [min(speedups), max(speedups)],
        f"{name}/epoch_s_estimate_55k": 55000 / batch * step_s,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "outputs" / "bench" / "bench.json"))
    parser.add_argument("--quick", action="store_true", help="few steps (smoke test), numbers not meaningful")
    parser.add_argument("--skip", nargs="*", default=[], choices=["base", "kae", "dmd", "topology", "edit", "path"])
    args = parser.parse_args(argv)
    steps = 6 if args.quick else 40
    fits = 2 if args.quick else 5  # Lightning fits per classifier workload (medians over fits)
    out: dict = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "quick": args.quick,
    }
    sizes = (256,) if args.quick else (512, 1024, 2048)
    out.update(matmul_probe(sizes))
    # the bf16 probe: the machine's real limit where the CPU multiplies bf16 natively (kaelab.precision)
    out.update(matmul_probe(sizes, torch.bfloat16))
    out["bf16_native"] = cpu_has_bf16() or (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    out["probe_bf16_over_fp32"] = out["matmul_flops_bf16"] / out["matmul_flops"]
    probe = Probe.at(out["matmul_flops_by_size"])
    probe_bf16 = Probe.at(out["matmul_flops_bf16_by_size"], dtype=torch.bfloat16)
    if "base" not in args.skip:
        out.update(
            bench_classifier(
                "resmlp_mnist",
                dict(_target_="kaelab.models.ResMLP", in_dim=784, width=784, n_blocks=4, out_dim=10),
                784,
                10,
                batch=128,
                steps=steps + 6,
                probe=probe,
                fits=fits,
            )
        )
        # the same model at bf16-mixed, against the bf16 probe (its own precision's limit)
        out.update(
            bench_classifier(
                "resmlp_mnist_bf16",
                dict(_target_="kaelab.models.ResMLP", in_dim=784, width=784, n_blocks=4, out_dim=10),
                784,
                10,
                batch=128,
                steps=steps + 6,
                probe=probe_bf16,
                precision="bf16-mixed",
                fits=fits,
            )
        )
        yinyang = dict(_target_="kaelab.models.ResMLP", in_dim=2, width=10, n_blocks=5, out_dim=3)
        yy_steps = steps * 5 + 6
        out.update(bench_classifier("resmlp_yinyang", yinyang, 2, 3, batch=512, steps=yy_steps, probe=probe, fits=fits))
        # as a job of a sweep on CPU slots runs it (hydra/launcher=slots: cores // jobs threads each)
        with torch_threads(1):
            probe_1 = Probe.at(matmul_probe((512, 1024))["matmul_flops_by_size"])
            one = bench_classifier("resmlp_yinyang_1thread", yinyang, 2, 3, 512, yy_steps, probe_1, fits=fits)
            out.update(one)
    if "kae" not in args.skip:
        for precision, p in (("32-true", probe), ("bf16-mixed", probe_bf16)):
            out.update(
                bench_kae(
                    batch=64 if args.quick else 512,
                    steps=3 if args.quick else 8,
                    probe=p,
                    precision=precision,
                    **(dict(dim=64, hidden=80, latent=64) if args.quick else {}),
                )
            )
    if "dmd" not in args.skip:
        from bench_dmd import bench_dmd

        bench_dmd(out, quick=args.quick)
    if "topology" not in args.skip:
        from bench_topology import bench_topology

        bench_topology(out, quick=args.quick)
    if "edit" not in args.skip:
        from bench_edit import bench_edit

        bench_edit(out, quick=args.quick)
    if "path" not in args.skip:
        from bench_path_spectrum import bench_path_spectrum

        bench_path_spectrum(out, quick=args.quick)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, sort_keys=True))
    print(json.dumps(out, indent=2, sort_keys=True))
    for key in sorted(k for k, v in out.items() if k.endswith("_measurement_error") and v):
        ratio = key.removesuffix("_measurement_error")
        print(
            f"bench: measurement error: {ratio} = {out[ratio]:.2f} > 1.0 (the probe ran in a slower moment than the "
            "workload; rerun on an idle machine)"
        )
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
