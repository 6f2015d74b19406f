"""Encoder isometry study (KAE paper, Sec. 4.1, Figure 2B): which isometry weight keeps the shape?

Aggregates a multirun of the topology stage over ``kae.lambdas.iso``::

    python -m kaelab -m +experiment=yinyang_isometry kae.lambdas.iso=0,1e-3,1
    python -m kaelab.topology.isometry outputs/multirun/yinyang_isometry/<time>

Each job wrote the Betti curves (``topology_curves.csv``) and persistence diagrams
(``topology_diagrams.csv``) of x_j in the original (preprocessed) space and in its KAE's observable
space. This overlays every KAE's observable-space curves on the original's in one figure
(``isometry_betti_curves.png``) and scores each lambda by its distance to the original:

* ``curve_distance``: sum over k of the L1 distance between the beta_k curves (integral of
  |beta_k^obs - beta_k^orig| over eps divided by the eps range: an average difference in count);
* ``bottleneck_h0`` / ``bottleneck_h1``: bottleneck distance between the persistence diagrams
  (truncated at the grid's largest eps, GUDHI).

Writes ``isometry.json`` (per lambda, and the closest lambda by each distance) and the figure
into the sweep directory (or ``--out``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from kaelab.errors import ConfigError
from kaelab.topology import betti as B


def read_curves(path: Path) -> dict[str, np.ndarray]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def read_diagrams(path: Path) -> dict[tuple[str, int], np.ndarray]:
    out: dict[tuple[str, int], list[list[float]]] = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            out.setdefault((r["space"], int(r["dim"])), []).append([float(r["birth"]), float(r["death"])])
    return {k: np.array(v).reshape(-1, 2) for k, v in out.items()}


def find_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Job directories of the sweep with their isometry weight, curves and diagrams."""
    jobs = []
    for curves_csv in sorted(sweep_dir.rglob("topology_curves.csv")):
        job = curves_csv.parent
        cfg_path = job / ".hydra" / "config.yaml"
        if not cfg_path.is_file():
            continue
        cfg = OmegaConf.load(cfg_path)
        jobs.append(
            {
                "dir": job,
                "iso": float(cfg.kae.lambdas.iso),
                "seed": int(cfg.seed),
                "curves": read_curves(curves_csv),
                "diagrams": read_diagrams(job / "topology_diagrams.csv"),
            }
        )
    if not jobs:
        raise ConfigError(f"no topology job (topology_curves.csv with .hydra/config.yaml) under {sweep_dir}")
    return sorted(jobs, key=lambda j: (j["iso"], j["seed"]))


def score(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    eps = jobs[0]["curves"]["eps"]
    ref = jobs[0]["curves"]
    for job in jobs[1:]:
        c = job["curves"]
        if (
            len(c["eps"]) != len(eps)
            or not np.allclose(c["eps"], eps)
            or not np.array_equal(c["original_beta0"], ref["original_beta0"])
        ):
            raise ConfigError(f"{job['dir']} measured a different original cloud or eps grid than {jobs[0]['dir']}")
    dims = sorted(int(k[len("original_beta") :]) for k in ref if k.startswith("original_beta"))
    eps_max = float(eps[-1])
    per_job = []
    for job in jobs:
        c, d = job["curves"], job["diagrams"]
        row: dict[str, Any] = {"iso": job["iso"], "seed": job["seed"], "dir": str(job["dir"])}
        total = 0.0
        for k in dims:
            dist = B.curve_distance(c[f"original_beta{k}"], c[f"observable_beta{k}"], eps)
            row[f"curve_distance_h{k}"] = dist
            total += dist
            empty = np.zeros((0, 2))
            row[f"bottleneck_h{k}"] = B.bottleneck(
                B.truncate_diagram(d.get(("original", k), empty), eps_max),
                B.truncate_diagram(d.get(("observable", k), empty), eps_max),
            )
        row["curve_distance"] = total
        per_job.append(row)
    out: dict[str, Any] = {"eps_max": eps_max, "eps_num": len(eps), "dims": dims, "jobs": per_job}
    for key in ["curve_distance"] + [f"bottleneck_h{k}" for k in dims]:
        best = min(per_job, key=lambda r, key=key: r[key])
        out[f"closest_iso_by_{key}"] = best["iso"]
    return out


ISO_COLORS = ["tab:blue", "tab:green", "tab:red", "tab:purple", "tab:orange", "tab:brown"]


def plot_overlay(jobs: list[dict[str, Any]], result: dict[str, Any], path: Path, title: str) -> Path:
    from kaelab.viz.topology import plot_betti_curves

    eps = jobs[0]["curves"]["eps"]
    dims = result["dims"]
    curves = {"original (state space)": {k: jobs[0]["curves"][f"original_beta{k}"] for k in dims}}
    styles = {"original (state space)": {"c": "k", "lw": 2.5}}
    dist = {(r["iso"], r["seed"]): r["curve_distance"] for r in result["jobs"]}
    for i, job in enumerate(jobs):  # sorted by iso: the strongest penalty last, drawn in red as in the paper
        label = f"lambda_iso={job['iso']:g}" + (f" seed {job['seed']}" if len({j["seed"] for j in jobs}) > 1 else "")
        label += f" (distance {dist[(job['iso'], job['seed'])]:.3g})"
        curves[label] = {k: job["curves"][f"observable_beta{k}"] for k in dims}
        color = ISO_COLORS[i % len(ISO_COLORS)] if len(jobs) != 3 else ["tab:blue", "tab:green", "tab:red"][i]
        styles[label] = {"c": color, "lw": 1.4, "ls": "--"}
    return plot_betti_curves(eps, curves, path, title, styles=styles)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="multirun directory of +experiment=yinyang_isometry")
    parser.add_argument("--out", type=Path, default=None, help="where to write isometry.json and the figure")
    args = parser.parse_args(argv)
    jobs = find_jobs(args.sweep_dir)
    result = score(jobs)
    out = args.out or args.sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    n = int(result["jobs"] and jobs[0]["curves"]["original_beta0"][0])
    fig = plot_overlay(
        jobs,
        result,
        out / "isometry_betti_curves.png",
        f"Encoder isometry: Betti curves of x_j in observable space vs the original ({n} points)",
    )
    result["figure"] = str(fig)
    (out / "isometry.json").write_text(json.dumps(result, indent=2))
    print(
        f"{'lambda_iso':>10} {'curve dist':>11} " + " ".join(f"{'bottleneck H' + str(k):>14}" for k in result["dims"])
    )
    for r in result["jobs"]:
        print(
            f"{r['iso']:>10g} {r['curve_distance']:>11.4f} "
            + " ".join(f"{r[f'bottleneck_h{k}']:>14.4f}" for k in result["dims"])
        )
    print(f"closest to the original: lambda_iso={result['closest_iso_by_curve_distance']:g} (Betti-curve distance)")
    print(f"wrote {out / 'isometry.json'} and {fig}")
    return result


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:
        print(f"kaelab: error: {err}", file=sys.stderr)
        sys.exit(2)
