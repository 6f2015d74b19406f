#!/usr/bin/env python
"""The main MNIST job on a GPU, end to end from an empty cache: time and accuracy.

    python scripts/gpu_mnist_kae.py                      # one CUDA GPU, its best precision
    python scripts/gpu_mnist_kae.py --precision 32-true  # or any trainer.precision
    python scripts/gpu_mnist_kae.py -- kae.epochs=20     # extra Hydra overrides after --

Runs ``python -m kaelab +experiment=mnist_kae trainer=gpu`` in a fresh cache and output directory
(nothing is reused from an earlier run), with the card's precision: ``bf16-mixed`` where the card
multiplies bf16 natively (Ampere and newer), else fp32 with TF32 products where the card has them,
else fp32. Batches are gathered into pinned memory and copied with ``non_blocking`` transfers
(kaelab.data.tensor_data). Prints the wall time, the stages' test accuracies and the card, and
writes them to ``<out>/gpu_mnist_kae.json``.

``--accelerator cpu`` runs the same job on the CPU (what the tests do, on a tiny slice).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def card_precision(capability: tuple[int, int] | None, bf16: bool) -> tuple[str, bool]:
    """(trainer.precision, TF32 on) for a CUDA card of compute ``capability`` (None: no card):
    bf16-mixed where bf16 is native, else fp32 with TF32 from Ampere (8.0) on, else plain fp32."""
    if capability is None:
        return "32-true", False
    if bf16:
        return "bf16-mixed", False
    return "32-true", capability >= (8, 0)


def detect(accelerator: str) -> dict:
    """The card's name, precision and TF32 setting (``accelerator`` cpu: none)."""
    import torch

    if accelerator == "cpu":
        return {"device": "cpu", "precision": "auto", "tf32": False}
    if not torch.cuda.is_available():
        raise SystemExit("gpu_mnist_kae: no CUDA device is visible (use --accelerator cpu to run on the CPU)")
    precision, tf32 = card_precision(torch.cuda.get_device_capability(0), torch.cuda.is_bf16_supported())
    return {"device": torch.cuda.get_device_name(0), "precision": precision, "tf32": tf32}


def command(accelerator: str, precision: str, out: Path, extra: list[str]) -> list[str]:
    """The kaelab command line of the job (one device, a fresh cache and run directory under ``out``)."""
    trainer = ["trainer=gpu", "trainer.devices=1"] if accelerator == "gpu" else ["trainer=cpu"]
    return [
        sys.executable,
        "-m",
        "kaelab",
        "+experiment=mnist_kae",
        *trainer,
        f"trainer.precision={precision}",
        f"paths.cache_dir={out / 'cache'}",
        f"hydra.run.dir={out / 'run'}",
        *extra,
    ]


def summary(metrics: dict, wall_s: float, card: dict) -> dict:
    """The key numbers of a finished run's metrics.json."""
    keys = ("base/test_acc", "kae/test_acc", "kae/agreement", "precision")
    return {"wall_s": wall_s, **card, **{k: metrics[k] for k in keys if k in metrics}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accelerator", choices=["gpu", "cpu"], default="gpu")
    parser.add_argument("--precision", default=None, help="trainer.precision (default: the card's best)")
    parser.add_argument("--out", default=None, help="directory for the run and its cache (default: a new temp dir)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (after --)")
    args = parser.parse_args(argv)
    card = detect(args.accelerator)
    precision = args.precision or card["precision"]
    out = Path(args.out or tempfile.mkdtemp(prefix="kaelab-gpu-"))
    env = dict(os.environ)
    if card["tf32"] and precision == "32-true":
        env["KAELAB_TF32"] = "1"  # read by kaelab.precision.configure_matmul before training
    start = time.perf_counter()
    proc = subprocess.run(command(args.accelerator, precision, out, args.overrides), cwd=REPO, env=env)
    wall_s = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"gpu_mnist_kae: the run failed (exit {proc.returncode}); its log is under {out / 'run'}")
    result = summary(json.loads((out / "run" / "metrics.json").read_text()), wall_s, card)
    (out / "gpu_mnist_kae.json").write_text(json.dumps(result, indent=2))
    print(
        f"gpu_mnist_kae: {result['wall_s']:.0f} s end to end on {result['device']} ({precision}); "
        f"base test acc {result.get('base/test_acc', float('nan')):.4f}, "
        f"surrogate test acc {result.get('kae/test_acc', float('nan')):.4f}"
    )
    return result


if __name__ == "__main__":
    main()
