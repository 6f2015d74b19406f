"""Loggers (CSV default, TensorBoard, Weights & Biases offline / disabled) and GPU sweep slots."""

import pytest

from conftest import compose_cfg, run_cfg
from kaelab.errors import ConfigError

TINY = [
    "+experiment=yinyang_mlp",
    "data.n_train=200",
    "data.n_val=50",
    "data.n_test=50",
    "model.epochs=2",
    "callbacks.progress_bar=none",
]


def test_tensorboard_logger_writes_events(tmp_path):
    run_cfg([*TINY, "logger=tensorboard"], tmp_path)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert not (tmp_path / "run" / "csv").exists()


def test_wandb_offline_run_is_written_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    metrics = run_cfg(
        [
            *TINY,
            "logger=wandb",
            "logger.wandb.mode=offline",
            "logger.wandb.project=kaelab-test",
            "logger.wandb.tags=[a,b]",
        ],
        tmp_path,
    )
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()  # the local log is kept
    assert 0.0 <= metrics["test/acc"] <= 1.0


def test_wandb_disabled_logs_nothing_remote(tmp_path):
    metrics = run_cfg([*TINY, "logger=wandb", "logger.wandb.mode=disabled"], tmp_path)
    assert not list((tmp_path / "run").glob("wandb/offline-run-*"))
    assert "test/acc" in metrics


def test_bad_wandb_mode(tmp_path):
    with pytest.raises(ConfigError, match="logger.wandb.mode"):
        run_cfg([*TINY, "logger=wandb", "logger.wandb.mode=sometimes"], tmp_path)


def test_gpu_slot_per_multirun_job(monkeypatch):
    from kaelab import config

    monkeypatch.setattr(config, "gpu_count", lambda: 4)
    for num, slot in ((0, 0), (5, 1), (7, 3)):
        monkeypatch.setattr(config, "hydra_job_num", lambda num=num: num)
        assert config.gpu_for_job() == [slot]
    monkeypatch.setattr(config, "gpu_count", lambda: 0)
    with pytest.raises(ConfigError, match="trainer=gpu needs a CUDA GPU"):
        config.gpu_for_job()


def test_gpu_configs_compose(tmp_path):
    cfg = compose_cfg(["+experiment=mnist_kae", "trainer=ddp"], tmp_path)
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.strategy) == ("gpu", -1, "ddp")
    assert compose_cfg(["trainer=gpu"], tmp_path).trainer.accelerator == "gpu"
