"""Content-addressed artifact cache shared by runs and sweeps.

An artifact (a trained base model, extracted representations, ...) lives in
``<cache_dir>/<stage>/<key>/`` where ``key`` hashes the config slice (and upstream artifact keys)
that determine it. Guarantees (DESIGN.md):

* two jobs that need the same artifact do not both build it: the builder holds a file lock
  (``filelock``: an OS-level lock, released if the process dies) and the waiter then reuses it;
* a killed build never leaves a half-written artifact that a later job trusts: it is built in a
  private temporary directory and renamed into place (an atomic rename) only when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

log = logging.getLogger(__name__)


def config_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (resolved config slices, upstream keys)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (to key artifacts derived from a user-supplied checkpoint)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


class ArtifactCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def exists(self, stage: str, key: str) -> bool:
        return self.path(stage, key).is_dir()

    def get_or_build(self, stage: str, key: str, build: Callable[[Path], None], manifest: dict | None = None) -> Path:
        """Return the artifact directory, building it with ``build(tmp_dir)`` if it is missing."""
        final = self.path(stage, key)
        if final.is_dir():
            log.info("cache hit: %s/%s", stage, key)
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final.parent / f"{key}.lock")):
            if final.is_dir():  # another job built it while we waited
                log.info("cache hit after wait: %s/%s", stage, key)
                return final
            tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                log.info("building %s/%s", stage, key)
                build(tmp)
                if manifest is not None:
                    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
                os.replace(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return final
