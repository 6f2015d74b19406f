"""The bad-input battery: every bad input ends the CLI with a non-zero exit, one line naming the
offending key, no traceback, and the artifact cache byte-identical before and after.

Each case runs ``python -m kaelab``'s entry point (``kaelab.__main__.main``: Hydra composition,
schema and value checks, the stage) in this process, with ``sys.argv`` set, so the 40-odd cases
cost seconds rather than a Python start-up each; tests/test_config.py and tests/test_hardening.py
run the same errors through real subprocesses. New stages add their cases to ``CASES``.

A line "names the key" when it contains it: ``kaelab: error: ...`` lines (exit 2) must be the only
such line; Hydra's own errors (composition, types: exit 1) name it in their first line.
"""

from __future__ import annotations

import builtins
import signal
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from torch.utils.data import DataLoader, TensorDataset

from kaelab.models import Classifier

YY = ["+experiment=yinyang_mlp", "data.n_train=100", "data.n_val=50", "data.n_test=50", "callbacks=minimal"]
KAE = ["+experiment=yinyang_kae", "data.n_train=100", "data.n_val=50", "data.n_test=50", "callbacks=minimal"]
EDIT = ["+experiment=yinyang_edit", "data.n_train=100", "data.n_val=50", "data.n_test=50", "callbacks=minimal"]
DMD = ["+experiment=yinyang_dmd", "data.n_train=100", "data.n_val=50", "data.n_test=50", "callbacks=minimal"]


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Bad files: a text file, a truncated checkpoint, a crafted pickle, another architecture's
    checkpoint, a regular file to put paths under, a non-empty run directory."""
    d = tmp_path_factory.mktemp("bad_files")
    module = Classifier(dict(_target_="kaelab.models.MLP", in_dim=2, hidden=[4], out_dim=3), dict(lr=0.1, momentum=0.9,
                        weight_decay=0.0, warmup_frac=0.2), 3)  # fmt: skip
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(module, DataLoader(TensorDataset(torch.randn(8, 2), torch.randint(0, 3, (8,))), batch_size=4))
    trainer.save_checkpoint(d / "mlp.ckpt", weights_only=False)
    blob = (d / "mlp.ckpt").read_bytes()
    (d / "truncated.ckpt").write_bytes(blob[: len(blob) // 2])
    (d / "notes.txt").write_text("these are my notes, not a checkpoint\n")
    torch.save({"state_dict": {}, "payload": _Evil(str(d / "pwned"))}, d / "evil.ckpt")
    (d / "a_file").write_text("x")
    (d / "used_run").mkdir()
    (d / "used_run" / "metrics.json").write_text("{}")
    (d / "empty_data").mkdir()
    return {p.name: p for p in d.iterdir()} | {"dir": d}


# (id, arguments (with {name} for files[name]), the key the error line must name)
CASES = [
    # types (Hydra)
    ("type-int", [*YY, "model.epochs=many"], "model.epochs"),
    ("type-int-float", [*YY, "data.batch_size=1.5"], "data.batch_size"),
    ("type-bool", [*YY, "trainer.deterministic=maybe"], "trainer.deterministic"),
    ("type-seed", [*YY, "seed=abc"], "seed"),
    ("type-kae", [*KAE, "kae.k=ten"], "kae.k"),
    ("type-list", [*KAE, "kae.hidden=wide"], "kae.hidden"),
    # unknown keys and groups
    ("unknown-key", [*YY, "trainer.max_epoch=3"], "trainer.max_epoch"),
    ("unknown-appended-key", [*YY, "+model.net.depth=3"], "model.net.depth"),
    ("unknown-experiment", ["+experiment=nope"], "experiment"),
    ("unknown-data-group", [*YY, "data=cifar"], "data"),
    ("unknown-kae-group", [*KAE, "kae=nope"], "kae"),
    ("unknown-task", [*YY, "task=fly"], "task"),
    # ranges
    ("epochs-negative", [*YY, "model.epochs=-5"], "model.epochs"),
    ("epochs-zero", [*YY, "model.epochs=0"], "model.epochs"),
    ("batch-size-zero", [*YY, "data.batch_size=0"], "data.batch_size"),
    ("n-train-zero", [*YY, "data.n_train=0"], "data.n_train"),
    ("lr-negative", [*YY, "model.optim.lr=-0.1"], "model.optim.lr"),
    ("warmup-above-one", [*YY, "model.optim.warmup_frac=1.5"], "model.optim.warmup_frac"),
    ("momentum-above-one", [*YY, "model.optim.momentum=1.5"], "model.optim.momentum"),
    ("label-smoothing-one", [*YY, "model.label_smoothing=1.0"], "model.label_smoothing"),
    ("threads-zero", [*YY, "trainer.num_threads=0"], "trainer.num_threads"),
    (
        "checkpoint-argument-unknown",
        [*YY, "+callbacks.ckpt={_target_:lightning.pytorch.callbacks.ModelCheckpoint,every_n_epoch:2}"],
        "callbacks.ckpt.every_n_epoch",
    ),
    ("callback-not-a-config", [*YY, "model.epochs=1", "+callbacks.progress_bar=fancy"], "callbacks.progress_bar"),
    ("lr-infinite", [*YY, "model.optim.lr=inf"], "model.optim.lr"),
    ("kae-path-lam-nan", [*KAE, "kae.path.lam=nan"], "kae.path.lam"),
    ("wandb-mode", [*YY, "model.epochs=1", "logger=wandb", "logger.wandb.mode=sometimes"], "logger.wandb.mode"),
    ("kae-lambda-negative", [*KAE, "kae.lambdas.iso=-1"], "kae.lambdas.iso"),
    ("kae-path-lam-negative", [*KAE, "kae.path.lam=-0.5"], "kae.path.lam"),
    ("kae-path-more-blocks-than-steps", [*KAE, "kae.k=4", "kae.path.lam=1"], "kae.path"),
    ("kae-path-steps-wrong-count", [*KAE, "kae.path.steps=[10,20]"], "kae.path.steps"),
    ("kae-path-steps-out-of-range", [*KAE, "kae.path.steps=[10,20,30,100]"], "kae.path.steps"),
    ("kae-k-zero", [*KAE, "kae.k=0"], "kae.k"),
    ("kae-reduction", [*KAE, "kae.recon_reduction=median"], "kae.recon_reduction"),
    ("gpu-without-gpu", [*YY, "trainer=gpu"], "trainer.accelerator"),
    # cross-field constraints
    ("layer-order", [*KAE, "kae.source_layer=-1"], "kae.source_layer"),
    ("layer-out-of-range", [*KAE, "kae.target_layer=9"], "kae.target_layer"),
    ("layer-name", [*KAE, "kae.source_layer=blocks.7"], "kae.source_layer"),
    ("delay-too-long", [*DMD, "dmd.h=20"], "dmd.h"),
    ("dmd-rank-zero", [*DMD, "dmd.rank=0"], "dmd.rank"),
    ("dmd-span-reversed", [*DMD, "dmd.span=[3,1]"], "dmd.span"),
    ("exclude-unknown-class", [*YY, "data.exclude_classes=[5]"], "data.exclude_classes"),
    ("exclude-every-class", [*YY, "data.exclude_classes=[0,1,2]"], "data.exclude_classes"),
    # objects built from _target_ configs (kaelab/instantiate.py): checked before any work
    ("net-target-unknown", [*YY, "model.net._target_=kaelab.models.ResNet"], "model.net._target_"),
    ("net-target-missing-argument", [*YY, "~model.net.width"], "model.net.width"),
    ("net-target-not-a-module", [*YY, "model.epochs=1", "model.net={_target_:torch.zeros,size:[2]}"], "model.net"),
    (
        "optimizer-target-unknown",
        [*YY, "+model.optimizer={_target_:torch.optim.Adamm,_partial_:true}"],
        "model.optimizer._target_",
    ),
    ("optimizer-not-partial", [*YY, "+model.optimizer={_target_:torch.optim.AdamW}"], "model.optimizer"),
    (
        "scheduler-not-partial",
        [*YY, "+model.scheduler={_target_:torch.optim.lr_scheduler.StepLR,step_size:1}"],
        "model.scheduler",
    ),
    ("kae-path-rows", [*KAE, "kae.path.rows=half"], "kae.path.rows"),
    ("data-target-unknown", [*YY, "data._target_=kaelab.data.CIFARDataModule"], "data._target_"),
    ("scheduler-interval", [*YY, "model.scheduler_interval=batch"], "model.scheduler_interval"),
    (
        "callback-target-unknown",
        [*YY, "+callbacks.stop={_target_:lightning.pytorch.callbacks.EarlyStoping}"],
        "callbacks.stop._target_",
    ),
    (
        "logger-target-bad-argument",
        [*YY, "+logger.second={_target_:lightning.pytorch.loggers.CSVLogger,nme:x}"],
        "logger.second.nme",
    ),
    ("dmd-estimator-unknown", ["+experiment=yinyang_dmd", "+dmd.estimator={_target_:pydmd.NoDMD}"], "dmd.estimator"),
    (
        "trajectory-unknown-module",
        [*KAE, "model.trajectory={stages:[input_layer,blockz.*],head:head}"],
        "model.trajectory.stages",
    ),
    ("out-dim-vs-classes", [*YY, "model.epochs=1", "model.net.out_dim=5"], "model.net.out_dim"),
    ("resume-with-kae", [*KAE, "ckpt_path={mlp.ckpt}"], "ckpt_path"),
    ("model-checkpoint-with-train", [*YY, "model.checkpoint={mlp.ckpt}"], "model.checkpoint"),
    # missing, corrupt, unsafe files
    ("resume-missing", [*YY, "ckpt_path={dir}/nope.ckpt"], "ckpt_path"),
    ("resume-text-file", [*YY, "ckpt_path={notes.txt}"], "ckpt_path"),
    ("resume-truncated", [*YY, "ckpt_path={truncated.ckpt}"], "ckpt_path"),
    ("resume-crafted-pickle", [*YY, "ckpt_path={evil.ckpt}"], "ckpt_path"),
    ("resume-other-architecture", [*YY, "ckpt_path={mlp.ckpt}"], "ckpt_path"),
    ("base-missing", [*KAE, "model.checkpoint={dir}/nope.ckpt"], "model.checkpoint"),
    ("base-text-file", [*KAE, "model.checkpoint={notes.txt}"], "model.checkpoint"),
    ("base-truncated", [*KAE, "model.checkpoint={truncated.ckpt}"], "model.checkpoint"),
    ("base-crafted-pickle", [*KAE, "model.checkpoint={evil.ckpt}"], "model.checkpoint"),
    ("base-other-architecture", [*KAE, "model.checkpoint={mlp.ckpt}"], "model.checkpoint"),
    (
        "mnist-missing-offline",
        ["+experiment=mnist_mlp", "paths.data_dir={empty_data}", "data.download=false"],
        "KAELAB_DATA_DIR",
    ),
    # unwritable or occupied paths
    ("cache-under-a-file", [*YY, "paths.cache_dir={a_file}/cache"], "paths.cache_dir"),
    ("cache-is-a-file", [*YY, "paths.cache_dir={a_file}"], "paths.cache_dir"),
    ("run-dir-under-a-file", [*YY, "hydra.run.dir={a_file}/run"], "hydra.run.dir"),
    ("run-dir-not-empty", [*YY, "hydra.run.dir={used_run}"], "hydra.run.dir"),
    ("sweep-dir-under-a-file", ["-m", *YY, "seed=0,1", "hydra.sweep.dir={a_file}/sweep"], "hydra.sweep.dir"),
    # the edit stage (target classes, redirect, regularisers, strategy)
    ("edit-class-range", [*EDIT, "edit.target_class=3"], "edit.target_class"),
    ("edit-class-negative", [*EDIT, "edit.target_class=-1"], "edit.target_class"),
    ("edit-class-empty", [*EDIT, "edit.target_class=[]"], "edit.target_class"),
    ("edit-class-type", [*EDIT, "edit.target_class=[yin]"], "edit.target_class"),
    ("edit-every-class", [*EDIT, "edit.target_class=[0,1,2]"], "edit.target_class"),
    ("edit-no-training-samples", [*EDIT, "edit.target_class=0", "data.exclude_classes=[0]"], "edit.target_class"),
    (
        "edit-redirect-forgotten",
        [*EDIT, "edit.targets=class_centroid", "edit.target_class=1", "edit.redirect_to=1"],
        "edit.redirect_to",
    ),
    ("edit-redirect-missing", [*EDIT, "edit.targets=class_centroid"], "edit.redirect_to"),
    ("edit-redirect-range", [*EDIT, "edit.targets=class_centroid", "edit.redirect_to=7"], "edit.redirect_to"),
    ("edit-lambda", [*EDIT, "edit.lam=-1"], "edit.lam"),
    ("edit-mu", [*EDIT, "edit.mu=-0.1"], "edit.mu"),
    ("edit-strategy", [*EDIT, "edit.strategy=magic"], "edit.strategy"),
    ("edit-spectral-ratio", [*EDIT, "edit.strategy=spectral", "edit.spectral_ratio=0"], "edit.spectral_ratio"),
    ("edit-targets", [*EDIT, "edit.targets=bogus"], "edit.targets"),
    ("edit-form", [*EDIT, "edit.form=big"], "edit.form"),
    ("edit-keys-from", [*EDIT, "edit.keys_from=somewhere"], "edit.keys_from"),
    (
        "edit-retrain-with-checkpoint",
        [*EDIT, "edit.compare_retrain=true", "model.checkpoint={mlp.ckpt}"],
        "edit.compare_retrain",
    ),
]


def _fill(args: list[str], files: dict[str, Path]) -> list[str]:
    out = []
    for a in args:
        for name, path in files.items():
            a = a.replace("{" + name + "}", str(path))
        out.append(a)
    return out


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def run_main(args: list[str], monkeypatch) -> int:
    """``python -m kaelab ARGS`` in this process; returns the exit code."""
    from kaelab.__main__ import main

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setattr(sys, "argv", ["kaelab", *args])
    GlobalHydra.instance().clear()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
        for s, h in handlers.items():
            signal.signal(s, h)
    return code


def test_battery_is_big_enough():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("args, key", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(args, key, files, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAELAB_OUTPUT_DIR", str(tmp_path))
    monkeypatch.delenv("KAELAB_CACHE_DIR", raising=False)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # as on some clusters
    entry = tmp_path / "cache" / "base_model" / "0123456789abcdef"
    entry.mkdir(parents=True)
    (entry / "model.ckpt").write_bytes(b"\x00weights" * 100)
    (entry / "manifest.json").write_text('{"kaelab_cache": {"version": 1, "files": {}}}')
    before = _snapshot(tmp_path / "cache")
    marker = files["dir"] / "pwned"

    code = run_main(_fill(args, files), monkeypatch)
    err = capfd.readouterr().err

    assert code not in (0, None), err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("kaelab: error:")]
    if lines:
        assert len(lines) == 1 and key in lines[0], err
        assert code == 2
    else:  # Hydra's own composition / type errors
        first = next(ln for ln in err.splitlines() if ln.strip())
        assert key in first, err
    assert _snapshot(tmp_path / "cache") == before
    assert not marker.exists()  # no code from a crafted pickle ran
