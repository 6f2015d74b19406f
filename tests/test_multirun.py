"""Hydra multirun: a sweep over seeds and lambdas writes one metrics.json per job."""

import json

import pytest

from conftest import run_cli

TINY_KAE = [
    "data.n_train=300",
    "data.n_val=50",
    "data.n_test=100",
    "model.epochs=3",
    "kae.epochs=2",
    "callbacks=minimal",
    "~logger.csv",
    "trainer.num_threads=1",
]


@pytest.mark.parametrize(
    "launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]], ids=["basic", "joblib"]
)
def test_sweep_seeds_and_lambdas(tmp_path, launcher):
    proc = run_cli(["-m", *launcher, "seed=0,1", "kae.lambdas.iso=0,1", *TINY_KAE], tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "multirun" / "yinyang_kae").glob("*/*/metrics.json"))
    assert len(jobs) == 4
    results = [json.loads(p.read_text()) for p in jobs]
    assert len({r["base/test_acc"] for r in results}) == 1  # every job's surrogate is of the same base model
    # one base model for the whole sweep (KAE experiments fix model.seed)
    assert len(list((tmp_path / "cache" / "base_model").glob("*/model.ckpt"))) == 1
    assert sum(not r["base/cache_hit"] for r in results) == 1
