"""``RunGuard``, the Hydra callback of every kaelab run (``hydra.callbacks.run_guard`` in
conf/config.yaml): it checks the run or sweep directory before Hydra writes anything into it, and at
the end of a sweep writes the sweep's summary and table and reports the jobs that failed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from kaelab.aggregate import write_sweep_summary, write_tables
from kaelab.errors import KaelabError, fail, is_empty_dir, writable_dir_problem


class RunGuard(Callback):
    """Before Hydra creates the run (or sweep) directory: it must be creatable and writable, and
    empty unless the run resumes (``ckpt_path``), so two runs never write into one directory. After
    a sweep: ``sweep_summary.json`` (every job's status and error, artifact builds), the sweep's
    table (``aggregate.md``/``.csv``, ``kaelab.aggregate``), its page (``report.html``,
    ``kaelab.report``), one line listing the jobs that failed
    (their errors are in ``<job dir>/error.txt``) and a non-zero exit, once every job has run."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        problem = writable_dir_problem(run_dir, "hydra.run.dir")
        if problem is None and not is_empty_dir(run_dir) and not OmegaConf.select(config, "ckpt_path"):
            problem = (
                f"hydra.run.dir={str(run_dir)!r} is not empty (another run wrote there); choose a new directory, "
                "or resume that run with ckpt_path=<its checkpoints/last.ckpt>"
            )
        if problem:
            fail(problem)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        problem = writable_dir_problem(sweep_dir, "hydra.sweep.dir")
        if problem is None and not is_empty_dir(sweep_dir):
            problem = f"hydra.sweep.dir={str(sweep_dir)!r} is not empty (another sweep wrote there); choose a new one"
        if problem:
            fail(problem)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        summary = write_sweep_summary(sweep_dir)  # the sweep dir was empty at the start: every job is ours
        if summary["n_ok"]:
            try:
                md_path, _, _ = write_tables(sweep_dir)
                print(f"kaelab: sweep table: {md_path} (python -m kaelab.aggregate {sweep_dir})", file=sys.stderr)
            except KaelabError as err:  # e.g. no metric in common: the jobs' results are still there
                print(f"kaelab: no sweep table: {err}", file=sys.stderr)
        write_sweep_page(sweep_dir)
        bad = summary["failed"] + summary["missing"]
        if bad:
            first = bad[0]["error"]
            names = ", ".join(j["job"] for j in bad)
            fail(
                f"{len(bad)} of {summary['n_jobs']} sweep jobs failed (job {names}; first: {first}); "
                f"see {sweep_dir / 'sweep_summary.json'}"
            )


def write_sweep_page(sweep_dir: Path) -> None:
    """The sweep's ``report.html`` and one line naming it; a page that cannot be rendered costs one
    warning line, never the sweep's summary or its exit code."""
    from kaelab.report import write_safely, write_sweep_report

    path = write_safely(write_sweep_report, sweep_dir)
    if path is not None:
        print(f"kaelab: sweep report: {path}", file=sys.stderr)
