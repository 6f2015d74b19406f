"""A report page for every run and sweep: one self-contained ``report.html`` (inline CSS, figures as
base64 PNG data URIs, no network) in the run or sweep directory.

* ``write_run_report(run_dir)``: written by every run (``kaelab.pipeline.run``) once its
  ``metrics.json`` is written (kaelab.report.run);
* ``write_sweep_report(sweep_dir)``: written at the end of every sweep (``kaelab.run_guard.RunGuard``)
  (kaelab.report.sweep);
* ``write_report(path)``: either, by what the directory holds (``python -m kaelab.report DIR``);
* ``write_safely(write, ...)``: a page that cannot be rendered costs one warning line, never the
  run's results or its exit code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kaelab.errors import ConfigError

log = logging.getLogger(__name__)


def is_run_dir(path: Path) -> bool:
    return (path / "metrics.json").is_file()


def is_sweep_dir(path: Path) -> bool:
    markers = ("multirun.yaml", "sweep_summary.json")
    return any((path / m).is_file() for m in markers) or any(path.glob("*/.hydra"))


def write_report(path: str | Path) -> Path:
    """(Re-)write the report page of a run dir (it has ``metrics.json``) or a sweep dir (it has job
    dirs, ``multirun.yaml`` or ``sweep_summary.json``); a ConfigError for anything else."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path} is not a directory")
    if is_run_dir(path):
        from kaelab.report.run import write_run_report

        return write_run_report(path)
    if is_sweep_dir(path):
        from kaelab.report.sweep import write_sweep_report

        return write_sweep_report(path)
    raise ConfigError(
        f"{path} is neither a run dir (no metrics.json) nor a sweep dir (no job dirs, multirun.yaml or "
        "sweep_summary.json)"
    )


def write_safely(write: Callable[..., Path], *args: Any, **kwargs: Any) -> Path | None:
    """``write(*args, **kwargs)``, or None and one warning line when it fails for any reason."""
    try:
        return write(*args, **kwargs)
    except Exception as err:  # the page is an extra: the results are already on disk
        log.warning("no report page: %s: %s", type(err).__name__, " ".join(str(err).split())[:300])
        return None


def write_run_report(run_dir: Path, cfg: Any = None, elapsed_s: float | None = None) -> Path:
    """``<run_dir>/report.html`` (kaelab.report.run.write_run_report)."""
    from kaelab.report.run import write_run_report as write

    return write(run_dir, cfg, elapsed_s)


def write_sweep_report(sweep_dir: Path) -> Path:
    """``<sweep_dir>/report.html`` (kaelab.report.sweep.write_sweep_report)."""
    from kaelab.report.sweep import write_sweep_report as write

    return write(sweep_dir)
