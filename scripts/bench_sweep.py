#!/usr/bin/env python
"""Wall time of one small Yin-Yang KAE sweep (2 lambdas x 2 seeds) run sequentially (Hydra's basic
launcher, all cores for each job), in parallel (``hydra/launcher=slots``: one job per CPU slot,
cores // slots threads each) and through a local Ray instance (``hydra/launcher=ray``: one CPU per
task) -> outputs/bench/sweep.json, with whether each parallel table equals the sequential one.
Each run starts from an empty cache, so each trains the base model once.

    python scripts/bench_sweep.py [--epochs 20 --kae-epochs 100] [--out outputs/bench/sweep.json]
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


def run_sweep(launcher: list[str], threads: int | None, extra: list[str], root: Path) -> dict:
    env = dict(os.environ, KAELAB_OUTPUT_DIR=str(root))
    args = ["-m", "+experiment=yinyang_kae", "seed=0,1", "kae.lambdas.iso=0,1e-3", *launcher, *extra]
    if threads:
        args.append(f"trainer.num_threads={threads}")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kaelab", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed ({proc.returncode}): {proc.stderr[-2000:]}")
    sweep = next((root / "multirun" / "yinyang_kae").iterdir())
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    table = (sweep / "aggregate.md").read_text()
    return {"wall_s": wall, "artifact_builds": summary["artifact_builds"], "table": table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--kae-epochs", type=int, default=100)
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "sweep.json")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    extra = [
        "data.n_train=1000", "data.n_val=200", "data.n_test=500", "data.batch_size=100",
        f"model.epochs={args.epochs}", f"kae.epochs={args.kae_epochs}", "kae.batch_size=250",
        "callbacks=minimal", "~logger.csv",
    ]  # fmt: skip
    out: dict = {"cores": cores, "settings": extra}
    with tempfile.TemporaryDirectory() as tmp:
        out["sequential"] = run_sweep([], cores, extra, Path(tmp) / "seq")
        out["parallel"] = run_sweep(["hydra/launcher=slots", f"hydra.launcher.n_jobs={cores}"], None, extra,
                                    Path(tmp) / "par")  # fmt: skip
        out["ray"] = run_sweep(["hydra/launcher=ray"], None, extra, Path(tmp) / "ray")
    body = {k: out[k]["table"].split("\n", 1)[1] for k in ("sequential", "parallel", "ray")}
    out["speedup"] = out["sequential"]["wall_s"] / out["parallel"]["wall_s"]
    out["speedup_ray"] = out["sequential"]["wall_s"] / out["ray"]["wall_s"]
    out["same_table"] = body["sequential"] == body["parallel"]
    out["same_table_ray"] = body["sequential"] == body["ray"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k not in ("sequential", "parallel")}, indent=2))
    for k in ("sequential", "parallel", "ray"):
        print(k, f"{out[k]['wall_s']:.1f} s", out[k]["artifact_builds"])
        print(out[k]["table"])


if __name__ == "__main__":
    main()
