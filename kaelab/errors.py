"""User-facing errors: printed as one line by the entry point, which then exits with code 2.

Also the checks of a run or sweep directory that ``kaelab.run_guard.RunGuard`` makes before Hydra
writes into it. This module imports no other kaelab module: every other one may import it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

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


class StorageError(KaelabError):
    """A file that must be written could not be (a full, read-only or unwritable disk), e.g. a cache
    entry; the message names the path."""


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
    The nearest existing ancestor must be a directory in which a file can be created: one is
    created there and removed at once (``os.access`` alone says yes to root on ``/proc`` or a
    read-only bind mount); nothing else is created."""
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
    try:
        fd, name = tempfile.mkstemp(prefix=".kaelab-write-probe-", dir=probe)
    except OSError as err:
        return f"{key}={str(path)!r} is not writable (no file can be created in {probe}: {err.strerror or err})"
    os.close(fd)
    os.unlink(name)
    return None


def is_empty_dir(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))
