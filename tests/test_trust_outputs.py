"""A full disk costs what it must and no more.

* In the run directory: metrics.json is written first; an optional output that then fails (a figure,
  a CSV table, an operator file) is one warning line and an entry in ``<stage>/artifact_errors``; the
  run keeps its metrics and exits 0.
* In the cache: a build that cannot write its files is a one-line KaelabError naming the cache entry
  (exit code 2 from the CLI), not a SafetensorError or OSError traceback.
* A cache or run directory that cannot be created (``/proc/...``, even as root) is refused before any
  work, as is a non-finite ``edit.lam``."""

from __future__ import annotations

import errno
import json
import logging

import pytest
from safetensors import SafetensorError

from conftest import FAST, run_cfg, run_cli
from kaelab.cache import ArtifactCache
from kaelab.errors import ConfigError, KaelabError, writable_dir_problem

SMALL = [
    "data.n_train=200",
    "data.n_val=50",
    "data.n_test=100",
    "data.batch_size=100",
    "model.epochs=3",
    "kae.epochs=3",
    "trainer.num_threads=1",
    *FAST,
]
SMALL_KAE = ["+experiment=yinyang_kae", *SMALL]


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _no_figures(monkeypatch):
    import matplotlib.figure

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", _disk_full)


# --------------------------------------------------------------------------- the run directory
def test_a_figure_on_a_full_disk_keeps_the_edit_runs_metrics(tmp_path, monkeypatch, caplog):
    """Catches: metrics.json written only after the stage's figures (an OSError from a figure lost
    every number of the run)."""
    _no_figures(monkeypatch)
    caplog.set_level(logging.WARNING)
    m = run_cfg(["+experiment=yinyang_edit", *SMALL, "edit.figure_points=100"], tmp_path)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("edit/forget_acc_after", "edit/retain_acc_after", "kae/key"):
        assert written[key] == m[key], key
    assert "edit/figure" not in written and not (tmp_path / "run" / "edit" / "observable_pcs.png").exists()
    (error,) = written["edit/artifact_errors"]
    assert "observable_pcs.png" in error and "No space left on device" in error
    assert (tmp_path / "run" / "edit" / "operator.safetensors").is_file()  # the outputs that could be written
    warnings = [r for r in caplog.records if "observable_pcs.png" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()


def test_a_figure_on_a_full_disk_keeps_the_kae_runs_metrics(tmp_path, monkeypatch):
    """Catches: the path-fidelity figure drawn inside the KAE stage before metrics.json (its OSError
    lost the surrogate's and the path report's numbers)."""
    _no_figures(monkeypatch)
    m = run_cfg(SMALL_KAE, tmp_path)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["kae/test_acc"] == m["kae/test_acc"] and written["path/fvu_mean"] == m["path/fvu_mean"]
    assert "path/figure" not in written
    assert any("path_fidelity.png" in e for e in written["kae/artifact_errors"])


def test_metrics_json_is_written_before_the_optional_outputs(tmp_path, monkeypatch):
    """Catches: a stage that writes metrics.json only at the end (pipeline.run): when the first figure
    is saved, metrics.json must already hold the run's numbers."""
    import matplotlib.figure

    seen = []

    def spy(self, path, *args, **kwargs):
        seen.append(json.loads((tmp_path / "run" / "metrics.json").read_text()))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    run_cfg(["+experiment=yinyang_spectrum", *SMALL], tmp_path)
    assert seen and all("spectrum/radius_K" in s for s in seen)


# ---------------------------------------------------------------------------------- the cache
@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
    ids=["OSError", "SafetensorError"],
)
def test_a_full_cache_disk_is_a_one_line_error_naming_the_entry(tmp_path, error):
    """Catches: the writer's SafetensorError / OSError escaping as a traceback from a cache build."""

    def build(tmp):
        raise error

    cache = ArtifactCache(tmp_path / "cache")
    with pytest.raises(KaelabError, match=r"No space left on device") as info:
        cache.get_or_build("representations", "k1", build)
    message = str(info.value)
    assert str(tmp_path / "cache" / "representations" / "k1") in message and "\n" not in message
    assert "paths.cache_dir" in message
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "cache" / "representations").iterdir())


def test_other_build_errors_are_not_reported_as_a_full_disk(tmp_path):
    """Catches: every build error turned into a storage error (a bug must keep its traceback)."""

    def build(tmp):
        raise SafetensorError("You are trying to save a non contiguous tensor")

    with pytest.raises(SafetensorError):
        ArtifactCache(tmp_path).get_or_build("s", "k", build)
    with pytest.raises(FileNotFoundError):
        ArtifactCache(tmp_path).get_or_build("s", "k", lambda tmp: open(tmp / "no" / "such", "rb"))


def test_a_full_cache_disk_in_a_run_is_a_kaelab_error(tmp_path, monkeypatch):
    """Catches: the representations' save_file error escaping from a real stage."""
    from kaelab.koopman import representations

    def full(tensors, path, *args, **kwargs):
        raise SafetensorError(f'Error while serializing: I/O error: No space left on device (os error 28) at "{path}"')

    monkeypatch.setattr(representations, "save_file", full)
    with pytest.raises(KaelabError, match=r"cache entry .*representations.* No space left on device"):
        run_cfg(SMALL_KAE, tmp_path)


# ---------------------------------------------------------------------------------- the paths
def test_a_directory_that_cannot_be_created_is_refused_even_for_root(tmp_path):
    """Catches: the writability check by os.access alone (true for root on /proc)."""
    problem = writable_dir_problem("/proc/kaelab_cache", "paths.cache_dir")
    assert problem is not None and "paths.cache_dir='/proc/kaelab_cache'" in problem
    assert writable_dir_problem(tmp_path / "new" / "dir", "paths.cache_dir") is None
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing behind
    with pytest.raises(ConfigError, match="paths.cache_dir='/proc/kaelab_cache'"):
        run_cfg([*SMALL_KAE, "paths.cache_dir=/proc/kaelab_cache"], tmp_path)


@pytest.mark.parametrize(
    ("override", "key"), [("paths.cache_dir=/proc/kaelab_cache", "paths.cache_dir"), ("edit.lam=nan", "edit.lam")]
)
def test_unusable_values_are_one_line_errors_from_the_cli(tmp_path, override, key):
    """Catches: a traceback (exit 1) instead of kaelab's one-line error (exit 2)."""
    res = run_cli(["+experiment=yinyang_edit", override], tmp_path, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("kaelab: error:") and key in lines[-1]
    assert "Traceback" not in res.stderr


def test_derived_keys_use_a_content_hash_that_follows_the_files(tmp_path):
    """Catches: a content hash computed from the config key or the manifest's metadata instead of the
    entry's files."""
    cache = ArtifactCache(tmp_path)

    def build(payload: bytes):
        return lambda tmp: (tmp / "x.bin").write_bytes(payload)

    cache.get_or_build("s", "k", build(b"one"), {"note": "a"})
    first = cache.content_hash("s", "k")
    cache.invalidate("s", "k", "test")
    cache.get_or_build("s", "k", build(b"one"), {"note": "b"})
    assert cache.content_hash("s", "k") == first  # same files, other metadata
    cache.invalidate("s", "k", "test")
    cache.get_or_build("s", "k", build(b"two"), {"note": "a"})
    assert cache.content_hash("s", "k") != first
