"""The report page of a sweep (``<sweep dir>/report.html``): the sweep's table (mean (SD) over seeds
per swept value, ``kaelab.aggregate``), each key metric plotted against each swept value with SD
error bars, the jobs that failed with their one-line errors, and links to every job's own page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kaelab.aggregate import SUMMARY_FILE, Job, aggregate, fmt_mean_sd, is_fraction_metric, read_jobs, sweep_summary
from kaelab.errors import ConfigError, KaelabError
from kaelab.fileio import atomic_write_text
from kaelab.report import html as H
from kaelab.report.run import REPORT_FILE

MAX_PLOTTED = 6  # key metrics plotted when the sweep has none of kaelab.aggregate.DEFAULT_METRICS


def scale_of(metric: str) -> float:
    return 100.0 if is_fraction_metric(metric) else 1.0


def load_summary(sweep_dir: Path) -> dict[str, Any]:
    """``sweep_summary.json`` (RunGuard writes it when the sweep ends), else the same from the jobs."""
    try:
        return json.loads((sweep_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return sweep_summary(sweep_dir)


def sweep_name(sweep_dir: Path) -> str:
    """The experiment's name (``multirun.yaml``), else the sweep dir's parent's name."""
    import yaml

    try:
        name = (yaml.safe_load((sweep_dir / "multirun.yaml").read_text()) or {}).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    return str(name or sweep_dir.resolve().parent.name)


def plotted_metrics(agg: dict[str, Any]) -> list[str]:
    if agg["shown"]:
        return list(agg["shown"])
    have = sorted({m for row in agg["rows"] for m in row["metrics"]})
    return have[:MAX_PLOTTED]


def overview_section(sweep_dir: Path, summary: dict[str, Any], agg: dict[str, Any] | None):
    rows = [
        ["jobs", summary["n_jobs"]],
        ["finished", summary["n_ok"]],
        ["failed", summary["n_failed"]],
        ["never finished", summary["n_missing"]],
        ["swept keys", ", ".join(summary["swept_keys"]) or "-"],
        ["mean and SD over", agg["seed_key"] if agg else "-"],
        ["artifacts built (per cache stage)", _counts(summary.get("artifact_builds"))],
        ["artifact cache hits (per cache stage)", _counts(summary.get("artifact_cache_hits"))],
    ]
    return H.section("overview", "Sweep", [H.table(["", ""], rows)])


def _counts(counts: dict[str, int] | None) -> str:
    return ", ".join(f"{k}: {v}" for k, v in (counts or {}).items()) or "-"


def _cell(row: dict[str, Any], metric: str) -> str:
    s = row["metrics"].get(metric)
    if not s:
        return "-"
    scale = scale_of(metric)
    cell = fmt_mean_sd(s["values"], scale, 2 if scale == 100.0 else 4)
    return f"{cell}, n={s['n']} *" if metric in row["non_numeric"] else cell


def table_section(agg: dict[str, Any] | None, problem: str | None, metrics: list[str]):
    if agg is None:
        return H.section("table", "Aggregate table", [H.para(f"No table: {problem}", "bad")])
    headers = [*agg["group_keys"], "n", *metrics]
    rows = []
    for row in agg["rows"]:
        lost = f" ({row['n_failed']} failed/missing)" if row["n_failed"] else ""
        rows.append(
            [*(row["group"][k] for k in agg["group_keys"]), f"{row['n']}{lost}", *(_cell(row, m) for m in metrics)]
        )
    numeric = range(len(agg["group_keys"]), len(headers))
    note = (
        f"Mean (SD) over {agg['seed_key']} per row; accuracies and agreements in percent. "
        "* a job had a non-numeric value, left out of the cell (aggregate.md names it). "
        "Every numeric metric: aggregate.csv."
    )
    return H.section("table", "Aggregate table", [H.table(headers, rows, numeric=numeric), H.para(note, "muted")])


def plots_section(agg: dict[str, Any] | None, jobs: list[Job], metrics: list[str]):
    from kaelab.viz.report import seed_metric_figure, sweep_metric_figure

    if agg is None or not metrics:
        return H.section("plots", "Key metrics against the swept values", [H.para("Nothing to plot.", "muted")])
    figs = [
        H.figure_of(sweep_metric_figure(agg, key, metrics, scale_of), f"against {key}") for key in agg["group_keys"]
    ]
    if not agg["group_keys"]:  # a sweep over seeds alone: each job's value against its seed
        seed = agg["seed_key"]
        points = {
            m: [(j.overrides.get(seed, j.name), float(j.metrics[m])) for j in jobs if _number(j.metrics.get(m))]
            for m in metrics
        }
        points = {m: p for m, p in points.items() if p}
        if points:
            figs.append(H.figure_of(seed_metric_figure(points, seed, scale_of), f"per job against {seed}"))
    return H.section("plots", "Key metrics against the swept values", figs)


def _number(value: Any) -> bool:
    from kaelab.aggregate import numeric

    return numeric(value)


def failed_section(summary: dict[str, Any]):
    bad = summary["failed"] + summary["missing"]
    if not bad:
        return H.section("failed", "Failed jobs", [H.para("None: every job finished.", "ok")])
    rows = [
        [j["job"], " ".join(f"{k}={v}" for k, v in (j["overrides"] or {}).items()), H.code(j["error"] or "")]
        for j in bad
    ]
    text = f"{len(bad)} of {summary['n_jobs']} jobs have no result; each job's error is in <job>/error.txt."
    return H.section(
        "failed", f"Failed jobs ({len(bad)})", [H.para(text, "bad"), H.table(["job", "overrides", "error"], rows)]
    )


def jobs_section(sweep_dir: Path, jobs: list[Job], swept: list[str]):
    from kaelab.metrics import headline

    rows = []
    for j in jobs:
        page = sweep_dir / j.name / REPORT_FILE
        where = H.link(f"{j.name}/{REPORT_FILE}", f"{j.name}/{REPORT_FILE}") if page.is_file() else "-"
        status = H.Raw(f'<span class="{"ok" if j.status == "ok" else "bad"}">{H.esc(j.status)}</span>')
        result = headline(j.metrics) or "" if j.status == "ok" else j.error or ""
        rows.append([j.name, status, " ".join(f"{k}={j.overrides.get(k)}" for k in swept), result, where])
    return H.section("jobs", f"Jobs ({len(jobs)})", [H.table(["job", "status", "overrides", "result", "report"], rows)])


def write_sweep_report(sweep_dir: Path) -> Path:
    """Write ``<sweep_dir>/report.html`` and return its path (the jobs' own pages are linked, not
    rewritten)."""
    sweep_dir = Path(sweep_dir)
    jobs = read_jobs(sweep_dir)
    if not jobs:
        raise ConfigError(f"{sweep_dir} holds no sweep job (no <job>/.hydra directory)")
    summary = load_summary(sweep_dir)
    agg, problem = None, None
    try:
        agg = aggregate(jobs)
    except KaelabError as err:
        problem = " ".join(str(err).split())
    metrics = plotted_metrics(agg) if agg else []
    sections = [
        overview_section(sweep_dir, summary, agg),
        table_section(agg, problem, metrics),
        plots_section(agg, jobs, metrics),
        failed_section(summary),
        jobs_section(sweep_dir, jobs, summary["swept_keys"]),
    ]
    page = H.page(f"sweep of {sweep_name(sweep_dir)}: {len(jobs)} jobs", str(sweep_dir), sections)
    return atomic_write_text(sweep_dir / REPORT_FILE, page)
