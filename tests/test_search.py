"""hydra/sweeper=optuna over KAE settings: the task returns the configured optimized_metric, a
validation metric (a test one is refused); a 4-trial study on Yin-Yang picks the best validation run."""

import json

import pytest
import yaml
from hydra import compose, initialize_config_module

from conftest import compose_cfg, run_cli
from kaelab.config import check_values
from kaelab.errors import ConfigError

TINY_KAE = [
    "data.n_train=300",
    "data.n_val=100",
    "data.n_test=100",
    "model.epochs=3",
    "kae.epochs=2",
    "callbacks=minimal",
    "~logger.csv",
    "trainer.num_threads=1",
]


def test_search_config_composes_with_a_validation_metric():
    overrides = ["+experiment=yinyang_kae", "+hparams_search=yinyang_kae_lambdas"]
    with initialize_config_module(version_base="1.3", config_module="kaelab.conf"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    assert cfg.optimized_metric == "kae/val_acc"
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweeper.direction == "maximize" and set(sweeper.params) == {"kae.lambdas.iso", "kae.lambdas.linear"}


@pytest.mark.parametrize("metric", ["kae/test_acc", "base/test_acc_macro", "kae/test_loss_iso"])
def test_a_test_metric_cannot_be_optimised(tmp_path, metric):
    cfg = compose_cfg(["+experiment=yinyang_kae", f"optimized_metric={metric}"], tmp_path)
    with pytest.raises(ConfigError, match="is a test metric"):
        check_values(cfg)


def test_four_trial_study_on_yinyang_maximises_validation_accuracy(tmp_path):
    args = ["-m", "+experiment=yinyang_kae", "+hparams_search=yinyang_kae_lambdas", "hydra.sweeper.n_trials=4"]
    proc = run_cli([*args, *TINY_KAE], tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = next((tmp_path / "multirun" / "yinyang_kae").iterdir())
    trials = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in range(4)]
    assert all("kae/val_acc" in t and "kae/test_acc" in t for t in trials)
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    # Optuna saw each trial's validation accuracy (not its test accuracy): its best is their maximum
    assert result["best_value"] == max(t["kae/val_acc"] for t in trials)
    assert set(result["best_params"]) == {"kae.lambdas.iso", "kae.lambdas.linear"}
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["n_ok"] == 4 and summary["artifact_builds"]["base_model"] == 1
    assert len({json.dumps(t["kae/key"]) for t in trials}) == 4  # four different KAE settings


def test_optimized_metric_missing_from_the_run_fails_the_job(tmp_path):
    args = ["-m", "+experiment=yinyang_kae", "seed=0", "optimized_metric=kae/nope", *TINY_KAE]
    proc = run_cli(args, tmp_path, timeout=600)
    assert proc.returncode == 2
    assert "optimized_metric=kae/nope is not a number in this run's metrics.json" in proc.stderr
