"""One table for a sweep: ``python -m kaelab.aggregate SWEEP_DIR [--metrics KEY ...] [--seed-key seed]``.

Reads every job of a Hydra multirun (``<sweep>/<job num>/``: ``.hydra/overrides.yaml``, and
``metrics.json`` or ``error.txt``), groups the jobs by the keys the sweep varied (all but the seed
key), and writes ``aggregate.md`` and ``aggregate.csv`` into the sweep directory: per group the mean,
SD and n over seeds of each metric, the way the KAE paper's Table 1 reports results (accuracies as
percentages, "mean (SD)"). Jobs that failed (their one-line error), and jobs that never produced a
result (killed, an unreadable metrics.json, or never started: expected from the sweep's grid in
``multirun.yaml``), are listed under the table, never dropped silently, and make the command exit 1.
A metric's NaN or non-numeric value is left out of its cell's mean, SD and n, and the cell is marked
with a footnote naming the jobs.

``sweep_summary(SWEEP_DIR)`` is what ``kaelab.run_guard.RunGuard`` writes as ``sweep_summary.json`` at the
end of every sweep: each job's status, overrides and error, and how often each cached artifact was
built (``building <stage>/<key>`` lines of the job logs, see ``kaelab.cache``), so a sweep shows that
its jobs shared one base model.

``mean_sd`` / ``fmt_mean_sd`` / ``markdown_table`` are also the writer of ``kaelab.table1``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kaelab.errors import ERROR_FILE, ConfigError, KaelabError
from kaelab.fileio import atomic_write_text
from kaelab.fileio import write_csv as atomic_write_csv

SUMMARY_FILE = "sweep_summary.json"
SLOT_FILE = "slot.json"  # written by kaelab.launcher: the CPU threads / GPU a job ran on
# the metrics shown in the Markdown table when present (the CSV has every numeric metric)
DEFAULT_METRICS = (
    "base/test_acc",
    "kae/test_acc",
    "kae/test_acc_macro",
    "kae/agreement",
    "kae/val_acc",
    "kae/state_fvu",
    "test/acc",
    "test/acc_macro",
    "val/acc",
    "dmd/test_acc",
    "dmd/base_test_acc",
    "edit/acc_after",
    "edit/retain_acc_after",
)
BUILD_LINE = re.compile(r"building (\S+?)/(\w+)\b")
HIT_LINE = re.compile(r"cache hit(?: after wait)?: (\S+?)/(\w+)\b")


# ------------------------------------------------------------------------- mean (SD) formatting
def is_fraction_metric(key: str) -> bool:
    """Accuracies and agreements are fractions in metrics.json and percentages in tables."""
    leaf = key.rsplit("/", 1)[-1]
    return "acc" in leaf or "agreement" in leaf


def mean_sd(values: list[float], scale: float = 100.0) -> tuple[float, float]:
    """Mean and sample SD (0 for one value) of ``values * scale``."""
    vals = [v * scale for v in values]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt_mean_sd(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    """``"mean (SD)"`` as in the KAE paper's Table 1."""
    m, s = mean_sd(values, scale)
    return f"{m:.{digits}f} ({s:.{digits}f})"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub Markdown table (``|`` inside cells escaped)."""
    cell = lambda v: str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- the jobs
@dataclass
class Job:
    name: str  # the job directory's name (Hydra's job number) or "-" for one that never started
    overrides: dict[str, str]
    status: str  # ok | failed | missing
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    slot: dict[str, Any] | None = None


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["+a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}`` (deletions ``~key`` are skipped)."""
    out = {}
    for item in items:
        if "=" not in item or item.startswith("~"):
            continue
        key, value = item.split("=", 1)
        out[key.lstrip("+")] = value
    return out


def _job_sort_key(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (1 << 30, path.name)


def read_jobs(sweep_dir: Path) -> list[Job]:
    """Every job directory of a sweep (those with ``.hydra/``), plus the grid points of a basic
    sweep that have none (status ``missing``)."""
    jobs = [read_job(p.parent) for p in sorted(sweep_dir.glob("*/.hydra"), key=lambda p: _job_sort_key(p.parent))]
    seen = [j.overrides for j in jobs]
    for expected in expected_overrides(sweep_dir) or []:
        if expected not in seen:
            jobs.append(Job("-", expected, "missing", error="never started"))
    return jobs


def read_job(job_dir: Path) -> Job:
    """One job: failed (its ``error.txt``), ok (a readable ``metrics.json``) or missing (why not)."""
    ov_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = parse_overrides(yaml.safe_load(ov_file.read_text()) or []) if ov_file.is_file() else {}
    slot = _read_json(job_dir / SLOT_FILE)
    if (job_dir / ERROR_FILE).is_file():  # also after metrics.json (e.g. no optimized_metric in it)
        error = " ".join((job_dir / ERROR_FILE).read_text().split())
        return Job(job_dir.name, overrides, "failed", error=error, slot=slot)
    metrics, problem = read_metrics(job_dir / "metrics.json")
    if metrics is not None:
        return Job(job_dir.name, overrides, "ok", metrics=metrics, slot=slot)
    return Job(job_dir.name, overrides, "missing", error=problem or "no metrics.json and no error.txt", slot=slot)


def read_metrics(path: Path) -> tuple[dict | None, str | None]:
    """A job's metrics (a JSON object), or None and why it cannot be read (None if there is no file)."""
    if not path.is_file():
        return None, None
    text = ""
    try:
        text = path.read_text()
        doc = json.loads(text)
    except (OSError, ValueError) as err:
        why = "empty" if not text.strip() else " ".join(str(err).split())
        return None, f"unreadable metrics.json ({why})"
    if not isinstance(doc, dict):
        kind = {list: "an array", str: "a string", type(None): "null"}.get(type(doc), "a number")
        return None, f"unreadable metrics.json ({kind}, not an object)"
    return doc, None


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def expected_overrides(sweep_dir: Path) -> list[dict[str, str]] | None:
    """The grid of a basic-sweeper multirun (from ``<sweep>/multirun.yaml``), one override dict per
    job; None when the sweep is not a grid (e.g. Optuna) or its config is not there."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = (yaml.safe_load(path.read_text()) or {}).get("hydra", {})
    sweeper = hydra_cfg.get("sweeper") or {}
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    task = list(hydra_cfg.get("overrides", {}).get("task") or [])
    parsed = OverridesParser.create().parse_overrides(overrides=params + task)
    batches = BasicSweeper.split_arguments(parsed, None)
    return [parse_overrides(job) for batch in batches for job in batch]


def swept_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value differs between jobs, in the order they first appear."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    return [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]


def numeric(value: Any) -> bool:
    """A value that counts towards a metric's mean, SD and n: a finite number."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_keys(jobs: list[Job]) -> list[str]:
    """The metrics of the finished jobs: keys with a number (NaN included) in some job's metrics.json."""
    is_number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    return sorted({k for j in jobs if j.status == "ok" for k, v in j.metrics.items() if is_number(v)})


# ------------------------------------------------------------------------------ aggregation
def aggregate(jobs: list[Job], seed_key: str | None = None, metrics: list[str] | None = None) -> dict[str, Any]:
    """Group the finished jobs by every swept key but ``seed_key``; mean, SD, n per metric over the
    jobs with a finite value, and the jobs whose value is not one (NaN, a string, ...).
    ``seed_key=None``: ``seed``, which a sweep need not have; a key given must be some job's override."""
    check_seed_key(jobs, seed_key)
    seed_key = seed_key or "seed"
    keys = swept_keys(jobs)
    group_keys = [k for k in keys if k != seed_key]
    all_metrics = metric_keys(jobs)
    unknown = [m for m in metrics or () if m not in all_metrics]
    if unknown:
        raise ConfigError(f"--metrics {unknown[0]} is in no job's metrics.json (have: {', '.join(all_metrics)})")
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(job.overrides.get(k, "") for k in group_keys), []).append(job)
    rows = []
    for values, members in sorted(groups.items(), key=lambda kv: [_sortable(v) for v in kv[0]]):
        done = [j for j in members if j.status == "ok"]
        rows.append(
            {
                "group": dict(zip(group_keys, values, strict=True)),
                "n": len(done),
                "n_failed": len(members) - len(done),
                "seeds": [j.overrides.get(seed_key, "") for j in done],
                "metrics": metric_stats(done, all_metrics),
                "non_numeric": non_numeric(done, all_metrics),
            }
        )
    shown = [m for m in (metrics or DEFAULT_METRICS) if m in all_metrics]
    return {"swept_keys": keys, "group_keys": group_keys, "seed_key": seed_key, "shown": shown, "rows": rows}


def check_seed_key(jobs: list[Job], seed_key: str | None) -> None:
    """A seed key given (not the default) must be an override of some job: a typo is an error."""
    if seed_key is not None and not any(seed_key in j.overrides for j in jobs):
        have = sorted({k for j in jobs for k in j.overrides})
        raise ConfigError(f"--seed-key {seed_key} is no job's override (have: {', '.join(have) or 'none'})")


def metric_stats(done: list[Job], all_metrics: list[str]) -> dict[str, dict[str, Any]]:
    """Mean, SD, n and the values of each metric over the jobs where it is a finite number."""
    stats = {}
    for m in all_metrics:
        vals = [float(j.metrics[m]) for j in done if numeric(j.metrics.get(m))]
        if vals:
            mean, sd = mean_sd(vals, scale=1.0)
            stats[m] = {"mean": mean, "sd": sd, "n": len(vals), "values": vals}
    return stats


def non_numeric(done: list[Job], all_metrics: list[str]) -> dict[str, list[tuple[str, Any]]]:
    """Per metric, the (job, value) pairs whose value is there but not a finite number."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for m in all_metrics:
        bad = [(j.name, j.metrics[m]) for j in done if m in j.metrics and not numeric(j.metrics[m])]
        if bad:
            out[m] = bad
    return out


def _sortable(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def render_markdown(sweep_dir: Path, jobs: list[Job], agg: dict[str, Any]) -> str:
    """The table (one row per group), the footnotes on non-numeric values, the jobs without a result."""
    seed_key, group_keys = agg["seed_key"], agg["group_keys"]
    out = [
        f"Sweep {sweep_dir}: mean (SD) over `{seed_key}` (n jobs per row); accuracies in percent.",
        "",
    ]
    headers = [f"`{k}`" for k in group_keys] + ["n"] + [f"`{m}`" for m in agg["shown"]]
    rows = []
    for row in agg["rows"]:
        lost = f" ({row['n_failed']} failed/missing)" if row["n_failed"] else ""
        cells = [row["group"][k] for k in group_keys] + [f"{row['n']}{lost}"]
        for m in agg["shown"]:
            s = row["metrics"].get(m)
            scale = 100.0 if is_fraction_metric(m) else 1.0
            cell = fmt_mean_sd(s["values"], scale, 2 if scale == 100.0 else 4) if s else "-"
            if m in row["non_numeric"]:  # fewer values than the row's n: say how many
                cell = f"{cell}, n={s['n']} *" if s else "- *"
            cells.append(cell)
        rows.append(cells)
    out.append(markdown_table(headers, rows))
    out += non_numeric_notes(agg)
    out += missing_jobs_table(jobs, agg["swept_keys"])
    return "\n".join(out)


def non_numeric_notes(agg: dict[str, Any], listed: int = 5) -> list[str]:
    """A footnote per shown metric that some finished job has as NaN, a string, ... (cells marked ``*``,
    with the number of values they hold)."""
    notes = []
    for m in agg["shown"]:
        bad = [pair for row in agg["rows"] for pair in row["non_numeric"].get(m, [])]
        if bad:
            some = "; ".join(f"job {name}: {value!r}" for name, value in bad[:listed])
            more = f"; {len(bad) - listed} more" if len(bad) > listed else ""
            notes.append(
                f"\\* `{m}`: {len(bad)} job{'s' if len(bad) > 1 else ''} had a non-numeric value, "
                f"left out of the cell's mean, SD and n ({some}{more})."
            )
    return [*notes, ""] if notes else []


def missing_jobs_table(jobs: list[Job], swept: list[str]) -> list[str]:
    """The jobs without a result (failed, unreadable, killed, never started) and why."""
    bad = [j for j in jobs if j.status != "ok"]
    if not bad:
        return []
    keys = swept or sorted({k for j in bad for k in j.overrides})
    body = [[j.name, j.status, " ".join(f"{k}={j.overrides.get(k)}" for k in keys), j.error or ""] for j in bad]
    return [
        f"Jobs without a result ({len(bad)} of {len(jobs)}):",
        "",
        markdown_table(["job", "status", "overrides", "error"], body),
    ]


def write_csv(path: Path, agg: dict[str, Any]) -> None:
    """One row per group: the group's key values, n, n_failed (failed or missing), then
    ``<metric>_mean``, ``_sd`` and ``_n``."""
    metrics = sorted({m for row in agg["rows"] for m in row["metrics"]})
    header = [*agg["group_keys"], "n", "n_failed"] + [f"{m}_{s}" for m in metrics for s in ("mean", "sd", "n")]
    lines = []
    for row in agg["rows"]:
        line = [row["group"][k] for k in agg["group_keys"]] + [row["n"], row["n_failed"]]
        for m in metrics:
            s = row["metrics"].get(m)
            line += [repr(s["mean"]), repr(s["sd"]), s["n"]] if s else ["", "", 0]
        lines.append(line)
    atomic_write_csv(path, header, lines)


def write_tables(
    sweep_dir: Path, seed_key: str | None = None, metrics: list[str] | None = None
) -> tuple[Path, Path, str]:
    """Write ``aggregate.md`` and ``aggregate.csv`` into ``sweep_dir``; returns their paths and the
    Markdown (``seed_key``: see ``aggregate``)."""
    jobs = read_jobs(sweep_dir)
    if not jobs:
        raise ConfigError(f"{sweep_dir} holds no sweep job (no <job>/.hydra directory)")
    agg = aggregate(jobs, seed_key, metrics)
    md = render_markdown(sweep_dir, jobs, agg)
    md_path, csv_path = sweep_dir / "aggregate.md", sweep_dir / "aggregate.csv"
    md_path.write_text(md)
    write_csv(csv_path, agg)
    return md_path, csv_path, md


# --------------------------------------------------------------------------- sweep_summary.json
def artifact_events(job_dirs: list[Path]) -> tuple[Counter, Counter]:
    """(builds, cache hits) per cache stage, from the ``kaelab.cache`` lines of the jobs' logs."""
    builds: Counter = Counter()
    hits: Counter = Counter()
    for job_dir in job_dirs:
        for log_file in job_dir.glob("*.log"):
            try:
                text = log_file.read_text(errors="replace")
            except OSError:
                continue
            builds.update(m.group(1) for m in BUILD_LINE.finditer(text))
            hits.update(m.group(1) for m in HIT_LINE.finditer(text))
    return builds, hits


def sweep_summary(sweep_dir: Path) -> dict[str, Any]:
    """Each job's status (ok / failed / missing), overrides, error and slot; artifact builds."""
    sweep_dir = Path(sweep_dir)
    jobs = read_jobs(sweep_dir)
    builds, hits = artifact_events([sweep_dir / j.name for j in jobs if j.name != "-"])
    keys = swept_keys(jobs)
    brief = lambda j: {"job": j.name, "overrides": {k: j.overrides.get(k) for k in keys}, "error": j.error}
    return {
        "sweep_dir": str(sweep_dir),
        "n_jobs": len(jobs),
        "n_ok": sum(j.status == "ok" for j in jobs),
        "n_failed": sum(j.status == "failed" for j in jobs),
        "n_missing": sum(j.status == "missing" for j in jobs),
        "swept_keys": keys,
        "failed": [brief(j) for j in jobs if j.status == "failed"],
        "missing": [brief(j) for j in jobs if j.status == "missing"],
        "artifact_builds": dict(sorted(builds.items())),
        "artifact_cache_hits": dict(sorted(hits.items())),
        "jobs": [
            {"job": j.name, "status": j.status, "overrides": j.overrides, "error": j.error, "slot": j.slot}
            for j in jobs
        ],
    }


def write_sweep_summary(sweep_dir: Path) -> dict[str, Any]:
    summary = sweep_summary(sweep_dir)
    atomic_write_text(Path(sweep_dir) / SUMMARY_FILE, json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when every job has a result, 1 when some job has none (the table is still written), 2
    for bad input."""
    ap = argparse.ArgumentParser(prog="python -m kaelab.aggregate", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--metrics", nargs="+", default=None, help="metrics in the Markdown table (default: key ones)")
    ap.add_argument("--seed-key", default=None, help="the override the mean and SD run over (default: seed)")
    args = ap.parse_args(argv)
    try:
        if not args.sweep_dir.is_dir():
            raise ConfigError(f"{args.sweep_dir} is not a directory")
        md_path, csv_path, md = write_tables(args.sweep_dir, args.seed_key, args.metrics)
    except KaelabError as err:
        print(f"kaelab.aggregate: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(md)
    print(f"wrote {md_path} and {csv_path}")
    jobs = read_jobs(args.sweep_dir)
    lacking = [j.name for j in jobs if j.status != "ok"]
    if lacking:
        print(
            f"kaelab.aggregate: {len(lacking)} of {len(jobs)} jobs have no result (job {', '.join(lacking)}; "
            f"listed under the table in {md_path})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
