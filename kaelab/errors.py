"""User-facing errors: printed as one line by the entry point, which then exits with code 2.

``RunGuard`` (a Hydra callback, ``hydra.callbacks`` in conf/config.yaml) checks the run or sweep
directory before Hydra writes anything into it, and reports the jobs of a sweep that failed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

ERROR_FILE = "error.txt"  # a failed sweep job's one-line error, in its job directory

# ${kaelab_pid:} in conf/config.yaml's run and sweep dirs makes them unique per process; cached, so
# that a sweep's jobs (Hydra copies the resolver cache into each job's config) see the launcher's pid
if not OmegaConf.has_resolver("kaelab_pid"):
    OmegaConf.register_new_resolver("kaelab_pid", os.getpid, use_cache=True)


class KaelabError(Exception):
    """A problem with the user's input (config, data, checkpoint), not a bug."""


class ConfigError(KaelabError, ValueError):
    """A config value that is well-typed but not valid (e.g. a layer index out of range)."""


class DataNotFoundError(KaelabError, RuntimeError):
    """Data files missing and not obtainable (e.g. MNIST offline without the raw files)."""


def check_choice(value: Any, choices: Any, key: str) -> None:
    """The one check of a setting that takes one of a few named values (a one-line ConfigError
    naming the key, the choices and the value given)."""
    if value not in choices:
        raise ConfigError(f"{key} must be one of {tuple(choices)}, got {value!r}")


def fail(message: str, code: int = 2) -> None:
    """Print ``kaelab: error: MESSAGE`` (one line) and exit."""
    print(f"kaelab: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    sys.exit(code)


def writable_dir_problem(path: str | os.PathLike, key: str) -> str | None:
    """Why ``path`` cannot be used as a directory to write into (created if missing), or None.
    Nothing is created: the nearest existing ancestor must be a writable directory."""
    path = Path(os.path.abspath(path))
    probe = path
    while not probe.exists():
        if probe.is_symlink():  # a dangling link
            return f"{key}={str(path)!r}: {probe} is a dangling symbolic link"
        probe = probe.parent
    if not probe.is_dir():
        where = "is a regular file" if probe == path else f"is under {probe}, which is a regular file"
        return f"{key}={str(path)!r} {where}, not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{key}={str(path)!r} is not writable ({probe} does not allow writing)"
    return None


def is_empty_dir(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


class RunGuard(Callback):
    """Before Hydra creates the run (or sweep) directory: it must be creatable and writable, and
    empty unless the run resumes (``ckpt_path``), so two runs never write into one directory. After
    a sweep: ``sweep_summary.json`` (every job's status and error, artifact builds), the sweep's
    table (``aggregate.md``/``.csv``, ``kaelab.aggregate``), one line listing the jobs that failed
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
        from kaelab.aggregate import write_sweep_summary, write_tables

        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        summary = write_sweep_summary(sweep_dir)  # the sweep dir was empty at the start: every job is ours
        if summary["n_ok"]:
            try:
                md_path, _, _ = write_tables(sweep_dir)
                print(f"kaelab: sweep table: {md_path} (python -m kaelab.aggregate {sweep_dir})", file=sys.stderr)
            except KaelabError as err:  # e.g. no metric in common: the jobs' results are still there
                print(f"kaelab: no sweep table: {err}", file=sys.stderr)
        bad = summary["failed"] + summary["missing"]
        if bad:
            first = bad[0]["error"]
            names = ", ".join(j["job"] for j in bad)
            fail(
                f"{len(bad)} of {summary['n_jobs']} sweep jobs failed (job {names}; first: {first}); "
                f"see {sweep_dir / 'sweep_summary.json'}"
            )
