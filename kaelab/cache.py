"""Content-addressed artifact cache shared by runs and sweeps.

An artifact (a trained base model, extracted representations, ...) lives in
``<cache_dir>/<stage>/<key>/`` where ``key`` hashes the config slice (and upstream artifact keys)
that determine it, after the key schema version (``KEY_SCHEMA``). Guarantees (README, "Reliability"):

* two jobs that need the same artifact do not both build it: the builder holds a file lock
  (``filelock``: an OS-level lock, released if the process dies) and the waiter then reuses it;
* a killed build never leaves a half-written artifact that a later job trusts: it is built in a
  private temporary directory (``.tmp-<key>-*``) and renamed into place (an atomic rename) only
  when complete; leftovers of killed builds are removed under the lock by the next build;
* an artifact is never used corrupt: its ``manifest.json`` records the sha256 and size of every
  file, checked on each hit. A changed, truncated, missing or extra file, an unreadable manifest
  or one without that checksum list, or (with ``ArtifactCache.load``) a file its loader cannot
  read, makes the entry be rebuilt under the lock, with one warning line naming it;
* files follow the umask (a cache shared by a group stays usable by the group);
* a build that cannot write its files (a full or read-only disk) is a one-line
  ``kaelab.errors.StorageError`` naming the entry, and leaves nothing behind.

Config keys find "the same" artifact; content hashes make a derived artifact follow its parent. An
entry's ``content_hash`` hashes its files' checksums, and a derived entry's key includes the content
hash of what it was derived from (an entry's ``content_hash``, or ``tensors_digest`` of a network's
weights or of tensors), so that a parent rebuilt under the same key with other content (after damage,
after its removal, with another thread count or accelerator, after a code change) gets its derived
entries rebuilt, never combined with the old ones.

Checking a hit re-hashes the files only when one of them may have changed since they were last
hashed: a stamp (``<stage>/<key>.verified``) holds each file's size, inode, mtime and ctime as
they were when the hashes last matched, and any write through the file system changes the ctime.
``KAELAB_CACHE_VERIFY=full`` re-hashes on every hit (e.g. on storage that may rot silently).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from kaelab.errors import StorageError
from kaelab.fileio import atomic_write_text, write_failure

log = logging.getLogger(__name__)

T = TypeVar("T")

MANIFEST = "manifest.json"
INTEGRITY = "kaelab_cache"  # the manifest's own section: {"version", "files": {name: {sha256, size}}}
VERSION = 1
# the first part of every key: raised when what a key hashes changes meaning, so that every entry
# written under the previous scheme is rebuilt (under a new key) instead of being read as this one
KEY_SCHEMA = 2
RACY_NS = 2_000_000_000  # a stamp newer than a file's ctime by less than this does not vouch for it


def config_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (resolved config slices, upstream keys), after
    the key schema (``KEY_SCHEMA``)."""
    blob = json.dumps([KEY_SCHEMA, *parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (to key artifacts derived from a user-supplied checkpoint)."""
    return sha256_file(path, chunk)[:16]


def tensors_digest(tensors: Any) -> str:
    """sha256 (16 hex digits) of named tensors (a mapping, e.g. a ``state_dict()``): each one's name,
    dtype, shape and bytes, in name order; the content hash of a network's weights or of data."""
    import torch  # here: the cache itself needs no torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:16]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def current_umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it (and restore it at once)
    os.umask(mask)
    return mask


def _files(root: Path) -> list[str]:
    """Relative paths of the regular files under ``root`` (the manifest excluded), sorted."""
    out = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def _checksums(root: Path) -> dict[str, dict[str, Any]]:
    return {n: {"sha256": sha256_file(root / n), "size": (root / n).stat().st_size} for n in _files(root)}


def _stat_sig(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


class ArtifactCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.built_now = False  # whether the last get_or_build built its entry

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def exists(self, stage: str, key: str) -> bool:
        return self.path(stage, key).is_dir()

    # ------------------------------------------------------------------------------------ public
    def get_or_build(self, stage: str, key: str, build: Callable[[Path], None], manifest: dict | None = None) -> Path:
        """Return the artifact directory, building it with ``build(tmp_dir)`` if it is missing
        (or rebuilding it if its files do not match its manifest)."""
        final = self.path(stage, key)
        self.built_now = False
        if final.is_dir() and self._check(final, stage, key) is None:
            log.info("cache hit: %s/%s", stage, key)
            return final
        try:
            return self._get_or_build_locked(final, stage, key, build, manifest)
        except Exception as err:  # a failed write (full disk): one line naming the entry, not a traceback
            reason = write_failure(err)
            if reason is None:
                raise
            raise StorageError(
                f"cache entry {final} could not be built: {reason}; free space there or point paths.cache_dir "
                f"elsewhere (paths.cache_dir={self.root})"
            ) from err

    def content_hash(self, stage: str, key: str) -> str:
        """sha256 (16 hex digits) of an entry's files as its manifest records them (names, sizes, sha256;
        not the manifest's other fields): the same files give the same hash, a rebuild with other bytes
        another one. What a derived entry's key includes (see the module's docstring)."""
        doc = json.loads((self.path(stage, key) / MANIFEST).read_text())
        files = doc[INTEGRITY]["files"]
        blob = json.dumps(sorted([n, f["sha256"], f["size"]] for n, f in files.items()))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def load(
        self,
        stage: str,
        key: str,
        build: Callable[[Path], None],
        load: Callable[[Path], T],
        manifest: dict | None = None,
    ) -> T:
        """``load(get_or_build(...))``; if the loader fails on a cached entry (a file it cannot
        read), the entry is rebuilt under the lock (one warning line) and loaded again."""
        path = self.get_or_build(stage, key, build, manifest)
        ident = _dir_id(path)
        try:
            return load(path)
        except Exception as err:  # any load error means the entry is unusable
            if self.built_now:  # built just now and still unreadable: a bug, not a damaged file
                raise
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")
            self.invalidate(stage, key, reason, ident)
        return load(self.get_or_build(stage, key, build, manifest))

    def invalidate(self, stage: str, key: str, reason: str, ident: tuple[int, int] | None = None) -> None:
        """Remove an entry (under the lock) so that the next ``get_or_build`` rebuilds it. With
        ``ident`` (the entry directory's (dev, inode) when it was found bad) an entry that another
        job has rebuilt since is left alone."""
        final = self.path(stage, key)
        with self._lock(stage, key):
            if not final.exists() or (ident is not None and _dir_id(final) != ident):
                return
            log.warning("kaelab: cache entry %s could not be loaded (%s); rebuilding it", final, reason)
            self._discard(final, key)

    def verify(self, stage: str, key: str, full: bool = True) -> str | None:
        """What is wrong with an entry (None: it matches its manifest). ``full``: hash every file."""
        final = self.path(stage, key)
        if not final.is_dir():
            return "missing"
        return self._problem(final, stage, key, full=full)

    # ----------------------------------------------------------------------------------- helpers
    def _get_or_build_locked(
        self, final: Path, stage: str, key: str, build: Callable[[Path], None], manifest: dict | None
    ) -> Path:
        """``get_or_build`` past a miss: under the lock, reuse what another job built meanwhile, else
        discard a bad entry and build."""
        final.parent.mkdir(parents=True, exist_ok=True)
        with self._lock(stage, key):
            self._remove_leftovers(final.parent, key)
            if final.is_dir() or final.is_symlink() or final.exists():
                problem = self._check(final, stage, key) if final.is_dir() else "not a directory"
                if problem is None:  # another job built (or repaired) it while we waited
                    log.info("cache hit after wait: %s/%s", stage, key)
                    return final
                log.warning("kaelab: cache entry %s is corrupt (%s); rebuilding it", final, problem)
                self._discard(final, key)
            return self._build(final, stage, key, build, manifest)

    def _lock(self, stage: str, key: str) -> FileLock:
        return FileLock(str(self.root / stage / f"{key}.lock"))

    def _stamp_path(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{key}.verified"

    def _build(self, final: Path, stage: str, key: str, build: Callable[[Path], None], manifest: dict | None) -> Path:
        tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            log.info("building %s/%s", stage, key)
            build(tmp)
            _follow_umask(tmp)
            files = _checksums(tmp)
            doc = dict(manifest or {})
            doc[INTEGRITY] = {"version": VERSION, "files": files}
            (tmp / MANIFEST).write_text(json.dumps(doc, indent=2, default=str))
            _follow_umask(tmp / MANIFEST)
            self._write_stamp(stage, key, tmp, files)
            os.replace(tmp, final)
            self.built_now = True
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def _check(self, final: Path, stage: str, key: str) -> str | None:
        """None if the entry can be used (``KAELAB_CACHE_VERIFY=full``: every file re-hashed)."""
        full = os.environ.get("KAELAB_CACHE_VERIFY", "").lower() == "full"
        return self._problem(final, stage, key, full=full)

    def _problem(self, final: Path, stage: str, key: str, full: bool) -> str | None:
        try:
            doc = json.loads((final / MANIFEST).read_text())
        except FileNotFoundError:
            return "manifest.json is missing"
        except (OSError, ValueError) as err:
            return f"manifest.json is unreadable ({type(err).__name__})"
        section = doc.get(INTEGRITY) if isinstance(doc, dict) else None
        files = section.get("files") if isinstance(section, dict) else None
        if not isinstance(files, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("size"), int)
            for v in files.values()
        ):
            return "manifest.json has no valid checksum list"
        try:
            present = _files(final)
        except OSError as err:
            return f"unreadable ({type(err).__name__})"
        extra = sorted(set(present) - set(files))
        if extra:
            return f"unexpected file {extra[0]}"
        stamp = None if full else self._read_stamp(stage, key)
        for name, want in files.items():
            path = final / name
            try:
                sig = _stat_sig(path)
            except OSError:
                return f"{name} is missing"
            if sig[0] != want["size"]:
                return f"{name} has {sig[0]} bytes, expected {want['size']}"
            if stamp is not None and _vouches(stamp, name, sig):
                continue
            try:
                digest = sha256_file(path)
            except OSError as err:
                return f"{name} is unreadable ({type(err).__name__})"
            if digest != want["sha256"]:
                return f"{name} does not match its sha256"
        if full or stamp is None or not all(_vouches(stamp, n, _stat_sig(final / n)) for n in files):
            self._write_stamp(stage, key, final, files)
        return None

    def _read_stamp(self, stage: str, key: str) -> dict | None:
        try:
            stamp = json.loads(self._stamp_path(stage, key).read_text())
        except (OSError, ValueError):
            return None
        return stamp if isinstance(stamp, dict) and isinstance(stamp.get("files"), dict) else None

    def _write_stamp(self, stage: str, key: str, entry: Path, files: dict) -> None:
        """Best effort: without a stamp the next hit re-hashes its files."""
        try:
            stamp = {"time_ns": time.time_ns(), "files": {n: _stat_sig(entry / n) for n in files}}
            atomic_write_text(self._stamp_path(stage, key), json.dumps(stamp))
        except OSError:
            pass

    def _discard(self, final: Path, key: str) -> None:
        """Move a bad entry out of the way (atomically) and delete it."""
        self._stamp_path(final.parent.name, key).unlink(missing_ok=True)
        if final.is_dir() and not final.is_symlink():
            trash = final.parent / f".tmp-{key}-old{uuid.uuid4().hex[:8]}"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            final.unlink(missing_ok=True)

    def _remove_leftovers(self, stage_dir: Path, key: str) -> None:
        """Delete ``.tmp-*`` directories of killed builds: this key's (its lock is held), and any
        other key's whose lock is free (no build of it is running)."""
        for tmp in stage_dir.glob(".tmp-*"):
            other = tmp.name[len(".tmp-") :].rpartition("-")[0]
            if not tmp.is_dir() or not other:
                continue
            if other == key:
                shutil.rmtree(tmp, ignore_errors=True)
                continue
            lock = stage_dir / f"{other}.lock"
            if not lock.exists():
                continue
            try:
                with FileLock(str(lock), timeout=0):
                    if tmp.exists():
                        shutil.rmtree(tmp, ignore_errors=True)
            except (Timeout, OSError):
                continue


def _vouches(stamp: dict, name: str, sig: list[int]) -> bool:
    """The stamp says ``name`` had these hashes with this (size, inode, mtime, ctime), and it was
    written long enough after the file's last change that a later write would change the ctime."""
    return stamp["files"].get(name) == sig and sig[3] <= int(stamp.get("time_ns", 0)) - RACY_NS


def _dir_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _follow_umask(path: Path) -> None:
    """Give ``path`` (and everything under it) the permissions the umask allows: some writers
    (safetensors, tempfile-based ones) create files with mode 0600 regardless of the umask."""
    mask = current_umask()
    if path.is_dir():
        os.chmod(path, 0o777 & ~mask)
        for dirpath, dirs, names in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(dirpath, d), 0o777 & ~mask)
            for n in names:
                p = os.path.join(dirpath, n)
                if not os.path.islink(p):
                    os.chmod(p, 0o666 & ~mask)
    elif not path.is_symlink():
        os.chmod(path, 0o666 & ~mask)
