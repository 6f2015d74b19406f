"""Callbacks and loggers a user adds by configuration alone (callbacks.NAME, logger.NAME: named
_target_ configs), through the real pipeline. Wrong implementations these catch: an extra callback
composed but never given to the Trainer (training would run all its epochs), an extra logger built
but never sent the metrics (its CSV would be missing or empty)."""

import csv

from conftest import run_cfg

TINY = ["+experiment=yinyang_mlp", "data.n_train=300", "data.n_val=100", "data.n_test=100", "model.epochs=20"]


def test_early_stopping_from_its_yaml_file_stops_training(tmp_path):
    # min_delta far above any change: no epoch counts as an improvement, so it stops after patience + 1
    m = run_cfg(
        [
            *TINY,
            "+callbacks/extra=early_stopping",
            "callbacks.early_stopping.patience=1",
            "callbacks.early_stopping.min_delta=100",
        ],
        tmp_path,
    )
    assert m["train/epochs"] == 2  # of model.epochs=20


def test_an_extra_logger_gets_the_stage_dir_and_the_metrics(tmp_path):
    m = run_cfg(
        [*TINY, "model.epochs=3", "+logger.second={_target_:lightning.pytorch.loggers.CSVLogger,name:second}"],
        tmp_path,
    )
    files = list((tmp_path / "run" / "second").rglob("metrics.csv"))
    assert len(files) == 1  # save_dir: the run dir, given by kaelab because the config sets none
    with open(files[0], newline="") as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("val/acc") for r in rows)
    assert any(r.get("test/acc") and float(r["test/acc"]) == m["test/acc"] for r in rows)
