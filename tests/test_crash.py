"""Crash tests with real signals, in subprocesses: SIGTERM (a scheduler's pre-emption), SIGINT,
kill -9 mid-training then resume, kill -9 in the middle of a cache write."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kaelab.cache import ArtifactCache

TRAIN = [
    "+experiment=yinyang_mlp",
    "data.n_train=200",
    "data.n_val=50",
    "data.n_test=100",
    "data.batch_size=100",
    "trainer.num_threads=1",
    "trainer.log_every_n_steps=1",
]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "KAELAB_OUTPUT_DIR": str(tmp_path)}


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "kaelab", *args]
    return subprocess.Popen(cmd, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def _wait_for(pattern: str, root: Path, proc: subprocess.Popen, timeout: float = 300) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {pattern}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no {pattern} after {timeout} s")


def _run_dir(tmp_path: Path) -> Path:
    (run_dir,) = (tmp_path / "runs" / "yinyang_mlp").iterdir()
    return run_dir


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_nonzero_with_one_resume_line_and_the_resume_finishes(tmp_path, sig, code):
    proc = _start([*TRAIN, "model.epochs=400"], tmp_path)
    # last.ckpt (written after the epoch's own checkpoint): a signal between the two finds no
    # resumable checkpoint yet, and rightly says so
    _wait_for("runs/yinyang_mlp/*/checkpoints/last.ckpt", tmp_path, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    name = signal.Signals(sig).name
    assert last.startswith(f"kaelab: stopped by {name}; no metrics.json; the last checkpoint is "), last
    run_dir = _run_dir(tmp_path)
    assert not (run_dir / "metrics.json").exists()
    ckpt = next(p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("epoch="))
    stopped_at = int(ckpt.name.split("-")[0].split("=")[1])
    assert stopped_at < 399

    cmd = shlex.split(last.split("resume with: ", 1)[1])
    assert cmd[:3] == ["python", "-m", "kaelab"] and f"hydra.run.dir={run_dir}" in cmd
    resumed = subprocess.run([sys.executable, *cmd[1:]], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                             text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/steps"] == 800
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    epochs = {r.split(",")[header.index("epoch")] for r in rows[1:]}
    assert {"0", str(stopped_at), "399"} <= epochs  # the log covers the whole run


def test_two_sigterms_stop_a_long_epoch_at_once(tmp_path):
    """The first SIGTERM lets Lightning finish the epoch and its checkpoint; a second one (a
    scheduler's grace period running out) stops at once, still with kaelab's line and 143."""
    proc = _start([*TRAIN, "data.n_train=100000", "data.batch_size=10", "model.epochs=2"], tmp_path)
    _wait_for("runs/yinyang_mlp/*/csv/hparams.yaml", tmp_path, proc)
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert time.time() - t0 < 30  # an epoch of 10,000 steps takes minutes here
    assert err.strip().splitlines()[-1].startswith("kaelab: stopped by SIGTERM;")
    assert "Traceback" not in err


def test_kill9_mid_training_then_resume_matches_an_uninterrupted_run(tmp_path):
    args = [*TRAIN, "model.epochs=200", "seed=4"]
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    full_dir.mkdir()
    killed_dir.mkdir()
    full = _start(args, full_dir)
    proc = _start(args, killed_dir)
    # only the newest epoch checkpoint is kept, so wait for any one past the first few epochs (a fast
    # machine replaces a given epoch's file before a poll sees it)
    deadline = time.time() + 300
    while not any(int(m.group(1)) >= 3 for c in killed_dir.glob("runs/yinyang_mlp/*/checkpoints/epoch=*.ckpt")
                  if (m := re.match(r"epoch=(\d+)-", c.name))):  # fmt: skip
        assert proc.poll() is None, f"exited {proc.returncode} before epoch 3: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline, "no checkpoint past epoch 3 after 300 s"
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no handler, no cleanup
    proc.wait()
    assert full.wait(timeout=600) == 0
    run_dir = _run_dir(killed_dir)
    assert not (run_dir / "metrics.json").exists()
    last = run_dir / "checkpoints" / "last.ckpt"
    resumed = subprocess.run(
        [sys.executable, "-m", "kaelab", *args, f"ckpt_path={last}", f"hydra.run.dir={run_dir}"],
        cwd=killed_dir, env=_env(killed_dir), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((_run_dir(full_dir) / "metrics.json").read_text())
    b = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test/acc", "test/acc_per_class", "train/loss", "val/acc", "train/steps"):
        assert a[key] == b[key], key


BUILD_SCRIPT = """
import sys, time
from kaelab.cache import ArtifactCache

def build(tmp):
    (tmp / "half.bin").write_bytes(b"x" * 100000)
    print("building", flush=True)
    time.sleep(120)

ArtifactCache(sys.argv[1]).get_or_build("stage", "k", build)
"""


def test_kill9_mid_cache_write_leaves_nothing_trusted(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "building"
    proc.kill()
    proc.wait()
    stage = tmp_path / "stage"
    assert not (stage / "k").exists()
    assert len(list(stage.glob(".tmp-k-*"))) == 1  # the killed build's leftover
    cache, calls = ArtifactCache(tmp_path), []
    path = cache.get_or_build("stage", "k", lambda tmp: calls.append((tmp / "ok.bin").write_bytes(b"1")))
    assert calls and (path / "ok.bin").read_bytes() == b"1"  # the dead builder's lock did not block
    assert list(stage.glob(".tmp-*")) == []  # and its leftover is gone
    assert cache.verify("stage", "k") is None
