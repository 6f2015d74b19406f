"""Writing result files atomically: a job killed mid-write leaves the old file or none, never a
truncated one. The one helper every stage uses (metrics.json, CSV tables, sweep summaries, cache
manifests and stamps).

Also what a full disk costs: ``write_failure`` tells a failed write (by any writer: Python, safetensors,
torch) from a bug, and ``optional_output`` turns a failed figure, table or operator file of a run, written
after its metrics.json, into one warning line and an entry in ``<stage>/artifact_errors``."""

from __future__ import annotations

import csv
import errno
import io
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# what a disk that is full, read-only or not ours makes a write fail with
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EIO}


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a unique temporary file beside ``path`` (created with the umask's
    permissions), then rename it over ``path``; creates the parent directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A CSV table (header, then rows), written atomically."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def write_failure(err: BaseException, any_os_error: bool = False) -> str | None:
    """One line saying why a write failed for lack of storage (or permission), or None when ``err`` is
    not such a failure: an OSError with a storage errno (any OSError with ``any_os_error``), a
    safetensors I/O error (a SafetensorError, which carries no errno) or torch.save's failed write
    (a RuntimeError)."""
    if isinstance(err, OSError) and (any_os_error or err.errno in STORAGE_ERRNOS):
        where = f" ({err.filename})" if err.filename else ""
        return f"{err.strerror or err}{where}"
    text = " ".join(str(err).split())
    if type(err).__name__ == "SafetensorError" and "I/O error" in text:
        return text.split("I/O error: ", 1)[1]
    if isinstance(err, RuntimeError) and "file write failed" in text:
        return text
    return None


def optional_output(metrics: dict[str, Any], stage: str, what: str, write: Callable[[], T]) -> T | None:
    """``write()`` (a figure, table or operator file of a run, written after its metrics.json) or,
    when it fails to write (a full disk), None: one warning line, and ``"what: reason"`` appended to
    ``metrics[f"{stage}/artifact_errors"]``. The run keeps its metrics and exits 0."""
    try:
        return write()
    except Exception as err:  # only failed writes are an optional output's to absorb
        reason = write_failure(err, any_os_error=True)
        if reason is None:
            raise
    log.warning("kaelab: %s was not written (%s); the run's metrics are kept", what, reason)
    metrics.setdefault(f"{stage}/artifact_errors", []).append(f"{what}: {reason}")
    return None
