#!/usr/bin/env python
"""Mean and SD of metrics over the jobs of a multirun (e.g. 5 KAE seeds, the paper's Table 1).

    python -m kaelab -m +experiment=yinyang_kae seed=0,1,2,3,4 hydra.sweep.dir=outputs/table1/yinyang
    python scripts/summarize.py outputs/table1/yinyang [--keys kae/test_acc base/test_acc] [--by KEY]

Writes summary.json next to the jobs and prints a table (accuracies as percentages).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import yaml

DEFAULT_KEYS = [
    "base/test_acc",
    "base/test_acc_macro",
    "kae/test_acc",
    "kae/test_acc_macro",
    "kae/agreement",
    "kae/state_fvu",
    "kae/train_acc",
    "test/acc",
    "test/acc_macro",
    "dmd/test_acc",
    "dmd/base_test_acc",
]


def job_overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    return dict(o.lstrip("+").split("=", 1) for o in yaml.safe_load(path.read_text()) if "=" in o)


def summarize(sweep_dir: Path, keys: list[str], by: str | None = None) -> dict:
    groups: dict[str, list[dict]] = defaultdict(list)
    for metrics_file in sorted(sweep_dir.glob("**/metrics.json")):
        job = json.loads(metrics_file.read_text())
        group = job_overrides(metrics_file.parent).get(by, "?") if by else "all"
        groups[group].append(job)
    if not groups:
        raise SystemExit(f"no metrics.json under {sweep_dir}")
    out = {}
    for group, jobs in sorted(groups.items()):
        stats = {"n": len(jobs)}
        for key in keys:
            values = [j[key] for j in jobs if isinstance(j.get(key), (int, float))]
            if values:
                stats[key] = {
                    "mean": statistics.fmean(values),
                    "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "min": min(values),
                    "max": max(values),
                }
        out[group] = stats
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--keys", nargs="*", default=DEFAULT_KEYS)
    parser.add_argument("--by", default=None, help="group jobs by this override key (e.g. model.optim.weight_decay)")
    args = parser.parse_args()
    summary = summarize(args.sweep_dir, args.keys, args.by)
    (args.sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    for group, stats in summary.items():
        print(f"[{args.by or 'all'}={group}] n={stats['n']}")
        for key, s in stats.items():
            if key == "n":
                continue
            pct = 100 if ("acc" in key or "agreement" in key) else 1
            lo, hi = pct * s["min"], pct * s["max"]
            print(f"  {key:22s} {pct * s['mean']:8.3f} ({pct * s['sd']:.3f})  range [{lo:.3f}, {hi:.3f}]")


if __name__ == "__main__":
    main()
