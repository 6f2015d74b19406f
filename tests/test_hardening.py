"""Hardening, one test (or a few) per guarantee: no code from a checkpoint, no cache poisoning through
resume, no corrupt cache entry used, no results lost on a cache error, unique and guarded run
directories, resume in place keeps history, sweep job dirs and failures, housekeeping, logs."""

from __future__ import annotations

import builtins
import csv
import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import REPO, compose_cfg, run_cfg, run_cli
from kaelab import cache as cache_mod
from kaelab.base_model import base_model, base_model_key, fit_classifier
from kaelab.cache import ArtifactCache
from kaelab.errors import ConfigError

TINY = [
    "+experiment=yinyang_mlp",
    "data.n_train=200",
    "data.n_val=50",
    "data.n_test=100",
    "data.batch_size=100",
    "model.epochs=3",
    "~callbacks.progress_bar",
    "~logger.csv",
    "trainer.num_threads=1",
]


def _entries(cache_dir: Path, stage: str = "base_model") -> list[Path]:
    d = cache_dir / stage
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else []


class _Evil:
    """Unpickling this creates ``marker`` (stands for any code a crafted checkpoint would run)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def _crafted_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 0, "payload": _Evil(marker)}, path)
    torch.load(path, weights_only=False)  # it really runs code when loaded without weights_only
    assert marker.exists()
    marker.unlink()
    return path


# ------------------------------------------------------------------ 1. no code from a checkpoint
def test_crafted_resume_checkpoint_is_refused_even_with_force_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    evil = _crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(ConfigError, match=r"ckpt_path=.*refused, not a plain-data checkpoint") as info:
        run_cfg([*TINY, f"ckpt_path={evil}"], tmp_path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_crafted_model_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    evil = _crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(ConfigError, match=r"model.checkpoint=.*refused"):
        base_model(compose_cfg([*TINY, "task=kae", f"model.checkpoint={evil}"], tmp_path), tmp_path / "w")
    assert not marker.exists()


def test_every_checkpoint_load_is_weights_only(tmp_path, monkeypatch, caplog):
    """Lightning's own resume load included (it is what TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD overrides
    when no weights_only is passed); and no "`weights_only` was not set" line is logged."""
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    caplog.set_level(logging.INFO)
    first = run_cfg(TINY, tmp_path / "a")
    last = tmp_path / "a" / "run" / "checkpoints" / "last.ckpt"
    resumed = run_cfg([*TINY, f"ckpt_path={last}"], tmp_path / "b")
    cfg = compose_cfg(TINY, tmp_path / "a")
    loaded = base_model(cfg, tmp_path / "w")  # from the cache
    assert loaded.cache_hit and resumed["test/acc"] == first["test/acc"]
    assert len(calls) >= 3 and all(c is True for c in calls), calls
    assert "was not set" not in caplog.text


# ------------------------------------------------------------ 2. no cache poisoning through resume
def test_resume_under_another_config_is_refused(tmp_path):
    run_cfg([*TINY, "seed=1"], tmp_path / "s1")
    last = tmp_path / "s1" / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["kaelab"]["base_model_key"] == base_model_key(
        compose_cfg([*TINY, "seed=1"], tmp_path)
    )
    with pytest.raises(ConfigError, match=r"ckpt_path=.*another data/model/trainer config"):
        run_cfg([*TINY, "seed=0", f"ckpt_path={last}"], tmp_path / "s1")
    seed0 = base_model_key(compose_cfg([*TINY, "seed=0"], tmp_path))
    assert not (tmp_path / "s1" / "cache" / "base_model" / seed0).exists()


def test_resume_from_checkpoint_without_key_is_never_cached(tmp_path, caplog):
    run_cfg([*TINY, "seed=1"], tmp_path / "s1")
    ckpt = torch.load(tmp_path / "s1" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    del ckpt["kaelab"]  # as a Classifier trained outside the base-model stage writes it
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    caplog.set_level(logging.WARNING)
    metrics = run_cfg([*TINY, "seed=0", f"ckpt_path={old}"], tmp_path / "s0")
    assert (tmp_path / "s0" / "run" / "metrics.json").is_file() and "test/acc" in metrics
    assert _entries(tmp_path / "s0" / "cache") == []  # not registered under seed 0's key
    assert "records no config key" in caplog.text
    # ... nor is anything resumed from the result
    again = torch.load(tmp_path / "s0" / "run" / "model.ckpt", weights_only=True)
    assert again["kaelab"]["base_model_key"] is None


# ------------------------------------------------------------------ 3. corrupt entries are rebuilt
def _counting_build(calls: list, payload: bytes = b"0123456789" * 1000):
    def build(tmp: Path) -> None:
        calls.append(1)
        (tmp / "data.bin").write_bytes(payload)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "meta.json").write_text('{"a": 1}')

    return build


def _flip(path: Path, offset: int = 100) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda e: _flip(e / "data.bin"), "does not match its sha256"),
        (lambda e: (e / "data.bin").write_bytes((e / "data.bin").read_bytes()[:500]), "has 500 bytes"),
        (lambda e: (e / "sub" / "meta.json").unlink(), "sub/meta.json is missing"),
        (lambda e: (e / "extra.pt").write_bytes(b"x"), "unexpected file extra.pt"),
        (lambda e: (e / "manifest.json").write_text("{garbage"), "manifest.json is unreadable"),
        (lambda e: (e / "manifest.json").unlink(), "manifest.json is missing"),
    ],
    ids=["flipped-byte", "truncated", "missing", "extra", "garbage-manifest", "no-manifest"],
)
def test_damaged_entry_is_rebuilt_with_one_warning(tmp_path, caplog, damage, reason):
    cache, calls = ArtifactCache(tmp_path), []
    path = cache.get_or_build("stage", "k", _counting_build(calls), {"what": "test"})
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["kaelab_cache"]["files"]) == {"data.bin", "sub/meta.json"} and manifest["what"] == "test"
    assert cache.get_or_build("stage", "k", _counting_build(calls)) == path and len(calls) == 1
    damage(path)
    caplog.set_level(logging.WARNING)
    cache.get_or_build("stage", "k", _counting_build(calls))
    assert len(calls) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and reason in warnings[0], warnings
    assert cache.verify("stage", "k") is None and (path / "data.bin").read_bytes() == b"0123456789" * 1000


def test_damage_right_after_the_build_is_caught(tmp_path, monkeypatch):
    """A write within the file system's timestamp granularity of the build leaves mtime and ctime
    unchanged: the stamp does not vouch for files that recent, so they are hashed. The racy case is
    forced: the file system's clock is frozen (mtime and ctime read the same before and after the
    write, as on a file system with coarse timestamps), so the stamp written at the build matches
    the damaged file's size, inode, mtime and ctime; only the racy window makes the hit hash it.
    Fails when the racy check is removed (or ``RACY_NS`` is 0)."""
    frozen, real = time.time_ns(), cache_mod._stat_sig
    monkeypatch.setattr(cache_mod, "_stat_sig", lambda p: [*real(p)[:2], frozen, frozen])
    cache, calls = ArtifactCache(tmp_path), []
    path = cache.get_or_build("stage", "k", _counting_build(calls))
    assert cache._stamp_path("stage", "k").is_file()  # the stamp that would vouch for the files
    _flip(path / "data.bin")
    cache.get_or_build("stage", "k", _counting_build(calls))
    assert len(calls) == 2


def test_hits_hash_only_files_that_changed(tmp_path, monkeypatch):
    cache, calls, hashed = ArtifactCache(tmp_path), [], []
    path = cache.get_or_build("stage", "k", _counting_build(calls))
    real = cache_mod.sha256_file
    monkeypatch.setattr(cache_mod, "sha256_file", lambda p, *a: hashed.append(Path(p).name) or real(p, *a))
    monkeypatch.setattr(cache_mod, "RACY_NS", 0)  # files older than the stamp count as settled
    time.sleep(0.05)
    cache.get_or_build("stage", "k", _counting_build(calls))  # hashes once, stamps
    hashed.clear()
    cache.get_or_build("stage", "k", _counting_build(calls))
    assert hashed == [] and len(calls) == 1  # a stamped hit costs one stat per file
    time.sleep(0.05)
    _flip(path / "data.bin")  # any write changes the ctime
    cache.get_or_build("stage", "k", _counting_build(calls))
    assert len(calls) == 2
    monkeypatch.setenv("KAELAB_CACHE_VERIFY", "full")
    hashed.clear()
    cache.get_or_build("stage", "k", _counting_build(calls))
    assert sorted(hashed) == ["data.bin", "meta.json"]


def test_load_error_rebuilds_entry(tmp_path, caplog):
    cache, calls = ArtifactCache(tmp_path), []
    cache.get_or_build("stage", "k", _counting_build(calls))
    loads = []

    def load(path: Path) -> dict:
        loads.append(1)
        if len(loads) == 1:
            raise ValueError("cannot parse\nsecond line")
        return json.loads((path / "sub" / "meta.json").read_text())

    caplog.set_level(logging.WARNING)
    assert cache.load("stage", "k", _counting_build(calls), load) == {"a": 1}
    assert len(calls) == 2 and "could not be loaded (ValueError: cannot parse)" in caplog.text


def test_entry_without_checksums_is_rebuilt(tmp_path, caplog):
    """Catches a cache that trusts an entry whose manifest records no checksums (nothing vouches
    for its files)."""
    entry = tmp_path / "stage" / "k"
    entry.mkdir(parents=True)
    (entry / "data.bin").write_bytes(b"old")
    (entry / "manifest.json").write_text('{"what": "old"}')
    cache, calls = ArtifactCache(tmp_path), []
    caplog.set_level(logging.WARNING)
    assert cache.get_or_build("stage", "k", _counting_build(calls)) == entry and calls == [1]
    assert "no valid checksum list" in caplog.text
    assert set(json.loads((entry / "manifest.json").read_text())["kaelab_cache"]["files"]) == {
        "data.bin",
        "sub/meta.json",
    }


def test_corrupt_cached_base_model_is_retrained_not_used(tmp_path, caplog):
    cfg = compose_cfg(TINY, tmp_path)
    first = base_model(cfg, tmp_path / "w1")
    entry = ArtifactCache(cfg.paths.cache_dir).path("base_model", first.key)
    size = (entry / "model.ckpt").stat().st_size
    _flip(entry / "model.ckpt", size // 2)  # torch would load it without complaint
    caplog.set_level(logging.WARNING)
    second = base_model(cfg, tmp_path / "w2")
    assert not second.cache_hit
    for key in ("test/acc", "test/acc_per_class", "train/loss", "val/acc", "train/steps"):
        assert second.metrics[key] == first.metrics[key], key
    assert "kaelab: cache entry" in caplog.text and first.key in caplog.text
    for a, b in zip(first.net.state_dict().values(), second.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    (entry / "metrics.json").write_text("not json")
    third = base_model(cfg, tmp_path / "w3")
    assert not third.cache_hit and third.metrics["test/acc"] == first.metrics["test/acc"]


def test_corrupt_cached_representations_are_extracted_again(tmp_path):
    from kaelab.koopman.representations import cached_representations, extract
    from kaelab.models import Trajectory, build_net

    torch.manual_seed(0)
    net = build_net(dict(_target_="kaelab.models.ResMLP", in_dim=2, width=8, n_blocks=2, out_dim=3)).eval()
    x = {"train": torch.randn(64, 2), "test": torch.randn(32, 2)}
    cache = ArtifactCache(tmp_path)
    net = Trajectory.of(net, x["train"][:2])
    cached_representations(cache, "base", net, x, ["input_layer", "blocks.1"])
    (st,) = (tmp_path / "representations").glob("*/representations.safetensors")
    _flip(st, st.stat().st_size - 8)
    again = cached_representations(cache, "base", net, x, ["input_layer", "blocks.1"])
    for split in x:  # (tensors loaded before may share the file's pages: compare with fresh ones)
        fresh = extract(net, x[split], ["input_layer", "blocks.1"])
        assert all(torch.equal(again[split][n], fresh[n]) for n in fresh), split


# ------------------------------------------------------------------ 5. results survive the cache
def test_metrics_written_when_cache_registration_fails(tmp_path, monkeypatch, caplog):
    def broken(self, stage, key, build, manifest=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ArtifactCache, "get_or_build", broken)
    caplog.set_level(logging.WARNING)
    metrics = run_cfg(TINY, tmp_path)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test/acc"] == metrics["test/acc"]
    assert "not registered in the cache" in caplog.text and "No space left" in caplog.text


@pytest.mark.parametrize("key", ["cache_dir", "run_dir"])
def test_unwritable_dirs_fail_before_any_work(tmp_path, monkeypatch, key):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=rf"paths.{key}=.*under .*a_file, which is a regular file"):
        run_cfg([*TINY, f"paths.{key}={blocker / 'sub'}"], tmp_path)
    target = tmp_path / "readonly"
    target.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == target else real(p, mode, **kw))
    with pytest.raises(ConfigError, match=rf"paths.{key}=.* is not writable"):
        run_cfg([*TINY, f"paths.{key}={target}"], tmp_path)
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "cache").exists()


# -------------------------------------------------------------- 6. run dirs: unique and guarded
def test_two_runs_started_at_once_get_their_own_dirs(tmp_path):
    args = [*TINY, "trainer.fast_dev_run=true"]
    env = {**os.environ, "KAELAB_OUTPUT_DIR": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "kaelab", *args], cwd=tmp_path, env=env, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    errs = [p.communicate(timeout=600)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    runs = list((tmp_path / "runs" / "yinyang_mlp").glob("*/metrics.json"))
    assert len(runs) == 2


def test_run_into_a_non_empty_dir_is_refused(tmp_path):
    run_dir = tmp_path / "taken"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text('{"test/acc": 0.9}')
    proc = run_cli([*TINY, f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("kaelab: error:")]
    assert "hydra.run.dir=" in line and "is not empty" in line
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.json"]  # nothing written there


# -------------------------------------------------------------- 7. resume in place keeps history
class _Crash(L.Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            raise RuntimeError("simulated crash")


def _without_times(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if not k.endswith("time_s")} for row in csv.DictReader(f)]


def test_resume_in_place_keeps_csv_history_and_last_ckpt(tmp_path):
    args = [*(a for a in TINY if a != "~logger.csv"), "model.epochs=6", "trainer.log_every_n_steps=1"]
    run_cfg(args, tmp_path / "full")
    full_csv = _without_times(tmp_path / "full" / "run" / "csv" / "metrics.csv")

    cfg = compose_cfg(args, tmp_path / "crashed")
    run_dir = tmp_path / "crashed" / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_classifier(cfg, run_dir, extra_callbacks=[_Crash(epoch=3)])
    last = run_dir / "checkpoints" / "last.ckpt"
    run_cfg([*args, f"ckpt_path={last}"], tmp_path / "crashed")  # the same run dir

    assert _without_times(run_dir / "csv" / "metrics.csv") == full_csv  # every row, in order
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["epoch=5-step=12.ckpt", "last.ckpt"], ckpts
    assert torch.load(last, weights_only=True)["epoch"] == 5


def test_an_interrupt_writes_the_log_rows_logged_since_the_last_flush(tmp_path):
    """An epoch's last rows are logged after its checkpoint and reach the disk when the next epoch
    starts; a SIGINT in between (real signals: tests/test_crash.py, which once lost epoch 0's rows
    so) must still write them. Catches a FlushLogs without its on_exception."""
    from lightning.pytorch.loggers import CSVLogger

    from kaelab.training import FlushLogs

    logger = CSVLogger(tmp_path, name="csv", version="")
    trainer = L.Trainer(logger=logger, callbacks=[FlushLogs()], enable_progress_bar=False)
    logger.log_metrics({"train/acc": 0.5, "epoch": 0}, step=2)  # buffered: flushed every 100 steps
    path = tmp_path / "csv" / "metrics.csv"
    assert not path.exists()
    for cb in trainer.callbacks:
        cb.on_exception(trainer, None, KeyboardInterrupt())
    rows = list(csv.DictReader(path.open()))
    assert [(r["epoch"], r["train/acc"]) for r in rows] == [("0", "0.5")]


# ------------------------------------------------- 8 + 12. sweep job dirs, a failing sweep point
def test_sweep_job_dirs_and_a_failing_point(tmp_path):
    deep = tmp_path / "some" / "deep" / "data" / "directory"
    long_list = [f"data.seed_{s}={n}" for s, n in (("train", 42), ("val", 41), ("test", 40))] * 1
    tiny = [a for a in TINY if not a.startswith("model.epochs")]
    args = ["-m", *tiny, "model.epochs=-1,2", f"paths.data_dir={deep}", "data.r_small=0.1000000000000000001"]
    args += long_list + [f"model.optim.weight_decay=0.0{'0' * 80}1"]
    args += ["model.optim.momentum=0.900000000000000000000000000000000000000000000000000000000000001"]
    assert len(",".join(args)) > 300
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    sweep = next((tmp_path / "multirun" / "yinyang_mlp").iterdir())
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert "model.epochs=-1 must be >= 1" in (sweep / "0" / "error.txt").read_text()
    assert not (sweep / "0" / "metrics.json").exists() and (sweep / "1" / "metrics.json").is_file()
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("kaelab: error: 1 of 2 sweep jobs failed (job 0;"), last


# ------------------------------------------------------------------------- 11. housekeeping
def test_leftovers_of_killed_builds_are_removed_under_the_lock(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    mine = stage / ".tmp-k-deadbeef"
    other_free = stage / ".tmp-other-0badf00d"
    other_busy = stage / ".tmp-busy-12345678"
    for d in (mine, other_free, other_busy):
        d.mkdir()
        (d / "half.bin").write_bytes(b"partial")
    (stage / "other.lock").touch()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from filelock import FileLock; l=FileLock(sys.argv[1]); l.acquire();"
         " print('held', flush=True); time.sleep(60)", str(stage / "busy.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        ArtifactCache(tmp_path).get_or_build("stage", "k", _counting_build([]))
        assert not mine.exists() and not other_free.exists()
        assert other_busy.exists()  # its build is still running
    finally:
        holder.kill()
        holder.wait()


def test_cache_files_follow_the_umask(tmp_path):
    from safetensors.torch import save_file

    def build(tmp: Path) -> None:
        save_file({"x": torch.zeros(3)}, str(tmp / "t.safetensors"))  # safetensors writes 0600
        (tmp / "d").mkdir()

    old = os.umask(0o002)
    try:
        path = ArtifactCache(tmp_path).get_or_build("stage", "k", build)
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(path / "t.safetensors") == 0o664 and mode(path / "manifest.json") == 0o664
    assert mode(path) == 0o775 and mode(path / "d") == 0o775


# ---------------------------------------------------------------------------------- logs
def test_non_interactive_log_is_short_and_ends_with_a_summary(tmp_path):
    args = [a for a in TINY if a != "~callbacks.progress_bar" and not a.startswith("model.epochs")]
    proc = run_cli([*args, "model.epochs=200"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "\r" not in out and "it/s" not in out  # no progress-bar refreshes
    epoch_lines = [ln for ln in out.splitlines() if "kaelab.training" in ln and " epoch " in ln]
    assert 15 <= len(epoch_lines) <= 22, epoch_lines
    assert "epoch 200/200 (100%)" in epoch_lines[-1]
    assert len(out.splitlines()) < 60
    assert "weights_only" not in out and "litlogger" not in out
    tail = out[out.index("summary of yinyang_mlp (task=train)") :]
    assert "test/acc" in tail and "metrics.json" in tail and "checkpoint" in tail


def test_live_bar_only_on_a_terminal(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import TQDMProgressBar

    from kaelab import training

    cfg = compose_cfg(["+experiment=yinyang_mlp"], tmp_path)
    for tty, kind in ((True, TQDMProgressBar), (False, training.EpochLines)):
        monkeypatch.setattr(training, "interactive", lambda tty=tty: tty)
        callbacks = training.build_callbacks(cfg.callbacks, tmp_path, True)
        bars = [c for c in callbacks if isinstance(c, L.pytorch.callbacks.ProgressBar)]
        assert len(bars) == 1 and type(bars[0]) is kind


def test_summary_table_lists_stages_and_artifacts(tmp_path):
    from kaelab.metrics import summary_table

    cfg = compose_cfg([], tmp_path)
    (tmp_path / "run" / "figs").mkdir(parents=True)
    (tmp_path / "run" / "figs" / "a.png").write_bytes(b"")
    metrics = {"base/test_acc": 0.99, "base/cache_hit": True, "kae/test_acc": 0.98, "kae/train_time_s": 75.0}
    table = summary_table(cfg, tmp_path / "run", metrics, 80.0)
    lines = table.splitlines()
    assert lines[0] == "summary of yinyang_kae (task=kae), 1m20s in all"
    assert lines[1].split()[0] == "headline"  # kaelab.metrics.headline: the stage's result first
    assert "base/test_acc 0.9900  (from the cache)" in lines[2] and "[1m15s]" in lines[3]
    assert any("1 PNG in" in ln for ln in lines) and len(lines) <= 8


def test_the_reliability_page_cites_tests_that_exist():
    """docs/reliability.md maps each guarantee to the tests that prove it: every test file and test
    name it cites must exist (catches a guarantee left citing a renamed or deleted test)."""
    import re

    text = (REPO / "docs" / "reliability.md").read_text()
    sources = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    files = set(re.findall(r"tests/(test_\w+\.py)", text))
    names = set(re.findall(r"\b(test_\w+)\b(?!\.py)", text)) - {f[:-3] for f in files}
    assert files and names
    assert all((REPO / "tests" / f).exists() for f in files), files
    missing = sorted(n for n in names if f"def {n}" not in sources)
    assert not missing, f"docs/reliability.md cites tests that do not exist: {missing}"


# -------------------------------------------------------------------------- benchmark probe
def test_bench_probe_is_interleaved_and_flags_ratios_above_one(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    sys.modules.pop("bench", None)
    import bench

    events = []

    class FakeProbe:
        def __init__(self, values):
            self.values = iter(values)

        def flops(self):
            events.append("A")
            return next(self.values)

    def workload(values):
        for v in values:
            events.append("B")
            yield v

    r = bench.interleaved_fraction("x/", FakeProbe([100, 50, 100, 100]), workload([50, 60, 40]))
    assert events == ["A", "B", "A", "B", "A", "B", "A"]
    assert r["x/fraction_of_probe"] == pytest.approx(0.5)  # median of 0.5, 1.2, 0.4
    assert r["x/fraction_of_probe_spread"] == pytest.approx([0.4, 1.2]) and r["x/fraction_of_probe_pairs"] == 3
    assert r["x/fraction_of_probe_measurement_error"] is False
    r = bench.interleaved_fraction("y/", FakeProbe([10] * 4), workload([11, 12, 9]))
    assert r["y/fraction_of_probe_measurement_error"] is True


def test_dangling_last_ckpt_resumes_from_the_newest_epoch_checkpoint(tmp_path):
    """kill -9 between saving epoch 3 (and removing epoch 2) and moving the last.ckpt link: the link
    dangles; the resume takes the newest epoch checkpoint beside it, not an error or an older one."""
    from kaelab.base_model import resolve_last_checkpoint

    for name in ("epoch=1-step=4.ckpt", "epoch=3-step=8.ckpt"):
        (tmp_path / name).write_bytes(b"x")
    last = tmp_path / "last.ckpt"
    last.symlink_to("epoch=2-step=6.ckpt")  # removed already
    assert resolve_last_checkpoint(last) == str(tmp_path / "epoch=3-step=8.ckpt")
    last.unlink()
    last.symlink_to("epoch=1-step=4.ckpt")  # a valid link is taken as it is
    assert resolve_last_checkpoint(last) == str(last)
    assert resolve_last_checkpoint(tmp_path / "nothing.ckpt") == str(tmp_path / "nothing.ckpt")
