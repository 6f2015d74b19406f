"""Do two ``make bench`` runs agree? Every ratio they report, side by side.

    python scripts/bench_compare.py outputs/bench/run_a.json outputs/bench/run_b.json [--tol 0.10]

A ratio is a key that compares two timings of the same run (``fraction_of_probe``, ``*_ratio``,
``speedup*``, ``*_over_*``) or an overhead (a ratio minus one: ``overhead``, compared as 1 +
overhead, the step-time ratio it stands for). Absolute times are not compared: they move with the
machine's load, which is what the ratios are built to cancel. Prints one line per ratio with the
relative difference |a - b| / max(a, b); exits 1 if any exceeds ``--tol``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

RATIO = re.compile(r"fraction_of_probe$|_ratio$|speedup|_over_|overhead")
OVERHEAD = re.compile(r"overhead")


def ratios(run: dict) -> dict[str, float]:
    out = {}
    for key, value in run.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not RATIO.search(key):
            continue
        out[key] = 1.0 + value if OVERHEAD.search(key) and not key.endswith("_ratio") else float(value)
    return out


def compare(a: dict, b: dict, tol: float) -> list[tuple[str, float, float, float, bool]]:
    ra, rb = ratios(a), ratios(b)
    rows = []
    for key in sorted(set(ra) & set(rb)):
        x, y = ra[key], rb[key]
        diff = abs(x - y) / max(abs(x), abs(y)) if max(abs(x), abs(y)) > 0 else 0.0
        rows.append((key, x, y, diff, diff <= tol))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--tol", type=float, default=0.10)
    args = ap.parse_args(argv)
    rows = compare(json.loads(args.a.read_text()), json.loads(args.b.read_text()), args.tol)
    width = max((len(r[0]) for r in rows), default=10)
    for key, x, y, diff, ok in rows:
        print(f"{key:<{width}}  {x:10.4g}  {y:10.4g}  {100 * diff:5.1f}%  {'ok' if ok else 'DIFFERS'}")
    bad = [r[0] for r in rows if not r[4]]
    print(
        f"{len(rows) - len(bad)} of {len(rows)} ratios agree within {100 * args.tol:.0f}%"
        + (f"; not: {', '.join(bad)}" if bad else "")
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
