"""The report page of one run (``<run dir>/report.html``): the headline result and key metrics beside
the paper's, every figure the run made, the loss curves of its fits, timings, cache hits, where each
artifact is, and the composed config. Read from the run directory alone (``metrics.json``, the PNGs,
the CSV logs, ``.hydra/``, the job log), so ``python -m kaelab.report RUN_DIR`` renders it again.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from kaelab.aggregate import BUILD_LINE, HIT_LINE, is_fraction_metric
from kaelab.errors import ConfigError
from kaelab.fileio import atomic_write_text
from kaelab.report import html as H
from kaelab.report.paper import paper_keys, paper_value

REPORT_FILE = "report.html"
FIRST_FIGURE = "kae_picture.png"  # the KAE's picture of the network leads the figures
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]", re.M)


def fmt_value(key: str, value: Any) -> str:
    """Accuracies in percent (as the papers print them), floats to 4 significant places, lists joined."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float) and is_fraction_metric(key):
        return f"{100 * value:.2f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(fmt_value(key, v) for v in value[:40]) + (" ..." if len(value) > 40 else "")
    return str(value)


def duration(seconds: float) -> str:
    """As the end-of-run summary writes it; milliseconds below a second."""
    from kaelab.metrics import _duration

    return f"{1000 * seconds:.0f} ms" if seconds < 1 else _duration(float(seconds))


def read_config(run_dir: Path, cfg: Any = None) -> tuple[dict[str, Any], str | None, str]:
    """(the composed config as a dict, its YAML text or None, where it came from)."""
    path = run_dir / ".hydra" / "config.yaml"
    if path.is_file():
        text = path.read_text()
        return (yaml.safe_load(text) or {}), text, str(path)
    if cfg is not None:
        from omegaconf import OmegaConf

        text = OmegaConf.to_yaml(cfg)
        return OmegaConf.to_container(cfg, resolve=False), text, "the config passed to kaelab.pipeline.run"
    return {}, None, "none"


def key_metrics(name: str, metrics: dict[str, Any]) -> list[str]:
    """The metrics the papers report for this experiment, then each stage's key metrics (those of
    the end-of-run summary), in that order, without repeats, those present only."""
    from kaelab.metrics import SUMMARY_STAGES

    keys = paper_keys(name) + [k for _, stage_keys, _ in SUMMARY_STAGES for k in stage_keys]
    keys += ["edit/forget_acc_before", "edit/forget_acc_after", "edit/retain_acc_before", "edit/retain_acc_after"]
    keys += ["topology/beta0_layers", "topology/beta0_steps", "topology/layer_eps"]
    return [k for k in dict.fromkeys(keys) if k in metrics]


def result_section(name: str, metrics: dict[str, Any]):
    from kaelab.metrics import headline

    top = headline(metrics)
    rows = []
    for key in key_metrics(name, metrics):
        paper = paper_value(name, key, metrics)
        rows.append([H.code(key), fmt_value(key, metrics[key]), *(paper or ("-", ""))])
    parts = [H.para(top, "headline")] if top else []
    if rows:
        parts.append(H.table(["metric", "this run", "paper", "the paper's number is"], rows, numeric=(1, 2)))
        parts.append(H.para("Accuracies and agreements in percent.", "muted"))
    every = [[H.code(k), fmt_value(k, v)] for k, v in sorted(metrics.items())]
    parts.append(H.details(f"all {len(metrics)} metrics (metrics.json)", H.table(["metric", "value"], every)))
    return H.section("result", "Result", parts)


def figures_section(run_dir: Path):
    pngs = sorted(run_dir.rglob("*.png"), key=lambda p: (p.name != FIRST_FIGURE, str(p.relative_to(run_dir))))
    if not pngs:
        return H.section("figures", "Figures", [H.para("This run made no figure (no PNG under the run dir).", "muted")])
    return H.section("figures", f"Figures ({len(pngs)})", [H.figure_file(p, p.relative_to(run_dir)) for p in pngs])


def _fit_name(csv_path: Path, run_dir: Path) -> str:
    rel = csv_path.relative_to(run_dir)
    names = {"base_model": "base model training", "kae": "KAE training"}
    return f"{names.get(rel.parts[0], 'training')} ({rel})" if len(rel.parts) > 1 else f"run ({rel})"


def loss_section(run_dir: Path, metrics: dict[str, Any]):
    from kaelab.viz.report import loss_curve_figure

    figs = []
    for csv_path in sorted(run_dir.rglob("metrics.csv")):
        fig = loss_curve_figure(csv_path, _fit_name(csv_path, run_dir))
        if fig is not None:
            figs.append(H.figure_of(fig, _fit_name(csv_path, run_dir)))
    if not figs:
        hits = [k.split("/")[0] for k, v in metrics.items() if k.endswith("/cache_hit") and v is True]
        why = f" ({', '.join(hits)} from the cache: trained by an earlier run)" if hits else ""
        text = f"No per-epoch losses under the run dir{why}; the CSV logger writes them (logger=csv)."
        figs.append(H.para(text, "muted"))
    return H.section("losses", "Loss curves", figs)


def log_span_s(run_dir: Path) -> float | None:
    """Seconds between the first and the last timestamped line of the run's job log."""
    stamps = [m for log in sorted(run_dir.glob("*.log")) for m in LOG_TIME.finditer(log.read_text(errors="replace"))]
    if len(stamps) < 2:
        return None
    at = lambda m: datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
    return at(stamps[-1]) - at(stamps[0])


def timings_section(run_dir: Path, metrics: dict[str, Any], elapsed_s: float | None):
    rows = []
    if elapsed_s is None:
        span = log_span_s(run_dir)
        if span is not None:
            rows.append(["the whole run (first to last line of its log)", duration(span)])
    else:
        rows.append(["the whole run (kaelab.pipeline.run)", duration(elapsed_s)])
    for key in sorted(k for k, v in metrics.items() if k.endswith("time_s") and isinstance(v, (int, float))):
        rows.append([H.code(key), duration(metrics[key])])
    if not rows:
        return H.section("timings", "Timings", [H.para("No timing recorded.", "muted")])
    return H.section("timings", "Timings", [H.table(["what", "time"], rows, numeric=(1,))])


def cache_entries(run_dir: Path, metrics: dict[str, Any]) -> dict[str, tuple[str | None, str]]:
    """key -> (its cache stage or None if unknown, how this run got it): built now or a cache hit
    (the job log's ``kaelab.cache`` lines), or named by a metric (keys ending in ``/key``, ``_key``)."""
    found: dict[str, tuple[str | None, str]] = {}
    for log in sorted(run_dir.glob("*.log")):
        text = log.read_text(errors="replace")
        found.update({m.group(2): (m.group(1), "built in this run") for m in BUILD_LINE.finditer(text)})
        found.update({m.group(2): (m.group(1), "cache hit") for m in HIT_LINE.finditer(text)})
    for name, value in sorted(metrics.items()):
        if (name.endswith("/key") or name.endswith("_key")) and isinstance(value, str) and value not in found:
            found[value] = (None, f"named by {name}")
    return found


def find_cache_dir(run_dir: Path, cfg: Any, keys: list[str]) -> Path | None:
    """The run's cache dir: ``cfg.paths.cache_dir`` when the run passes its config; else the first of
    the saved config's (resolved now, relative to the run's working dir) and ``<output root>/cache``
    (the run dir's ancestors) that holds one of ``keys``."""
    from omegaconf import OmegaConf

    if cfg is not None and OmegaConf.select(cfg, "paths.cache_dir", default=None):
        return Path(str(OmegaConf.select(cfg, "paths.cache_dir"))).resolve()
    candidates = []
    try:
        saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        hydra = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text()) or {}
        cwd = Path(hydra.get("hydra", {}).get("runtime", {}).get("cwd", "."))
        candidates.append(cwd / str(OmegaConf.select(saved, "paths.cache_dir")))
    except Exception:  # (no saved config, or one that does not resolve here): look beside the run
        pass
    candidates += [parent / "cache" for parent in list(run_dir.parents)[:4]]
    for cand in candidates:
        if any(next(cand.glob(f"*/{key}"), None) for key in keys):
            return cand
    return None


def artifacts_section(run_dir: Path, metrics: dict[str, Any], cfg: Any):
    hits = [[H.code(k), H.Raw('<span class="ok">yes</span>') if v is True else "no"]
            for k, v in sorted(metrics.items()) if k.endswith("cache_hit")]  # fmt: skip
    parts = [H.h3("Cache hits")]
    parts.append(H.table(["metric", "from the cache"], hits) if hits else H.para("No cache_hit metric.", "muted"))
    entries = cache_entries(run_dir, metrics)
    cache_dir = find_cache_dir(run_dir, cfg, list(entries))
    parts += [H.h3("Cache entries"), H.para(f"cache dir: {cache_dir or 'not found'}")]
    rows, ckpts = [], sorted(run_dir.rglob("*.ckpt"))
    for key, (stage, how) in sorted(entries.items(), key=lambda kv: (kv[1][0] or "", kv[0])):
        found = next(cache_dir.glob(f"{stage or '*'}/{key}"), None) if cache_dir else None
        ckpts += sorted(found.glob("*.ckpt")) if found else []
        rows.append([stage or (found.parent.name if found else "?"), H.code(key), how, H.code(found or "not found")])
    parts.append(H.table(["stage", "key", "this run", "where"], rows) if rows else H.para("None named.", "muted"))
    files = [run_dir / "metrics.json", *sorted(run_dir.glob("*.log")), *sorted(run_dir.rglob("metrics.csv")), *ckpts]
    rows = [[H.code(p), f"{p.stat().st_size / 1024:.1f} KiB"] for p in files if p.is_file()]
    parts += [H.h3("Files (results, logs, checkpoints)"), H.table(["path", "size"], rows, numeric=(1,))]
    return H.section("artifacts", "Cache and artifacts", parts)


def config_section(run_dir: Path, text: str | None, source: str):
    if text is None:
        return H.section("config", "Config", [H.para(f"No composed config: {run_dir}/.hydra/config.yaml is absent.")])
    parts = [H.para(f"From {source} ({len(text.splitlines())} lines).")]
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        items = yaml.safe_load(overrides.read_text()) or []
        parts.append(H.para("Overrides: " + (" ".join(items) if items else "none")))
    if not (run_dir / ".hydra" / "config.yaml").is_file():
        parts.append(H.para(f"(no {run_dir}/.hydra/config.yaml: a run started by a library call)", "muted"))
    parts.append(H.details("the composed config", H.pre(text)))
    return H.section("config", "Config", parts)


def write_run_report(run_dir: Path, cfg: Any = None, elapsed_s: float | None = None) -> Path:
    """Write ``<run_dir>/report.html`` (after ``metrics.json``, which it reads) and return its path.
    ``cfg``: the run's config when the run dir has no ``.hydra/config.yaml``; ``elapsed_s``: the run's
    wall time (else read from its job log)."""
    run_dir = Path(run_dir).resolve()
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no metrics.json: not a finished run")
    try:
        metrics = json.loads(path.read_text())
    except ValueError as err:
        raise ConfigError(f"{path} is not readable JSON ({' '.join(str(err).split())})") from err
    conf, text, source = read_config(run_dir, cfg)
    name, task = conf.get("name") or run_dir.name, conf.get("task") or "?"
    sections = [
        result_section(name, metrics),
        figures_section(run_dir),
        loss_section(run_dir, metrics),
        timings_section(run_dir, metrics, elapsed_s),
        artifacts_section(run_dir, metrics, cfg),
        config_section(run_dir, text, source),
    ]
    page = H.page(f"{name} (task={task})", str(run_dir), sections)
    return atomic_write_text(run_dir / REPORT_FILE, page)
