"""Base-model training: learns, is repeatable, resumes exactly, every experiment runs."""

import json

import lightning as L
import pytest

from conftest import EXPERIMENTS, FAST, compose_cfg, run_cfg
from kaelab.base_model import fit_classifier

SMALL_YY = ["+experiment=yinyang_mlp", "data.n_train=1000", "data.n_val=200", "data.n_test=500", "data.batch_size=100"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_of_every_experiment(experiment, tmp_path, data_dir):
    metrics = run_cfg([f"+experiment={experiment}", "trainer.fast_dev_run=true", *FAST], tmp_path, data_dir)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written.keys() == metrics.keys() and len(written) > 0
    if written.get("topology/backend"):  # a topology run measures shapes, not accuracies
        assert any(k.startswith("topology/layer/") or k.startswith("topology/step/") for k in written)
        return
    if written.get("spectrum/n_modes"):  # a spectrum run measures the operator, not accuracies
        assert written["spectrum/reconstruction_rel_err"] < 1e-6 and written["spectrum/radius_K"] > 0
        return
    accs = [v for k, v in written.items() if k.endswith("acc") and isinstance(v, float)]
    assert accs and all(0.0 <= a <= 1.0 for a in accs)


def test_short_yinyang_run_learns(tmp_path):
    m = run_cfg([*SMALL_YY, "model.epochs=40", *FAST], tmp_path)
    assert m["test/acc"] > 0.8  # chance is ~0.36
    per_class = m["test/acc_per_class"]
    assert len(per_class) == 3 and m["test/acc_macro"] == pytest.approx(sum(per_class) / 3)  # macro = mean over classes
    assert m["train/time_s"] > 0 and m["train/steps"] == 40 * 10


def test_seed_makes_cpu_runs_repeatable(tmp_path):
    runs = [run_cfg([*SMALL_YY, "model.epochs=5", "seed=7", *FAST], tmp_path / str(i)) for i in range(2)]
    other = run_cfg([*SMALL_YY, "model.epochs=5", "seed=8", *FAST], tmp_path / "other")
    for key in ("test/acc", "test/acc_per_class", "train/loss", "val/acc"):
        assert runs[0][key] == runs[1][key]
    assert runs[0]["train/loss"] != other["train/loss"]


class _Crash(L.Callback):
    """Kills training mid-epoch (after the checkpoint of the previous epoch was written)."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise RuntimeError("simulated crash")


def test_resume_after_crash_matches_uninterrupted_run(tmp_path):
    args = [*SMALL_YY, "model.epochs=6", "seed=3", "~callbacks.progress_bar", "~logger.csv"]
    full = run_cfg(args, tmp_path / "full")

    crashed_dir = tmp_path / "crashed"
    cfg = compose_cfg(args, crashed_dir)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_classifier(cfg, crashed_dir / "run", extra_callbacks=[_Crash(epoch=3, batch=4)])
    last = crashed_dir / "run" / "checkpoints" / "last.ckpt"
    assert last.is_file()

    resumed = run_cfg([*args, f"ckpt_path={last}"], tmp_path / "resumed")
    for key in ("test/acc", "test/acc_macro", "test/acc_per_class", "train/loss", "val/acc", "train/steps"):
        assert resumed[key] == full[key], key


def test_missing_resume_checkpoint_is_a_clear_error(tmp_path):
    from kaelab.errors import ConfigError

    with pytest.raises(ConfigError, match="no such checkpoint"):
        run_cfg([*SMALL_YY, "ckpt_path=/nonexistent.ckpt", *FAST], tmp_path)


def test_checkpoints_and_csv_log_are_written(tmp_path):
    run_cfg([*SMALL_YY, "model.epochs=2", "~callbacks.progress_bar"], tmp_path)
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "model.ckpt").is_file()
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss" in header and "val/acc" in header and "test/acc" in header


def test_per_step_loss_logged_only_when_a_logger_takes_it_gives_the_same_logs(tmp_path, monkeypatch):
    """The base model logs its step loss only on the steps Lightning sends to the loggers (and the
    epoch's last batch): the CSV log, the callback metrics and metrics.json are exactly those of a
    run that logs every step."""
    import csv

    from kaelab.models.classifier import Classifier

    args = [*SMALL_YY, "model.epochs=3", "trainer.log_every_n_steps=3", "callbacks=minimal", "trainer.num_threads=1"]

    def run(name):
        m = run_cfg([*args, f"paths.run_dir={tmp_path / name}"], tmp_path)
        rows = list(csv.DictReader(open(tmp_path / name / "csv" / "metrics.csv")))
        return m, [(r["step"], r["train/loss"]) for r in rows if r.get("train/loss")]

    gated, gated_rows = run("gated")
    monkeypatch.setattr(Classifier, "_logger_takes_this_step", lambda self, batch_idx: True)
    every, every_rows = run("every")
    assert gated_rows == every_rows and 30 // 3 <= len(gated_rows) < 30  # 10 steps an epoch, 3 epochs
    same = ("train/loss", "train/acc", "val/acc", "test/acc", "test/acc_per_class")
    assert {k: gated[k] for k in same} == {k: every[k] for k in same}


def test_a_scheduler_from_config_is_the_one_the_trainer_steps(tmp_path):
    """model.scheduler: a _partial_ _target_ config (here StepLR halving the lr every epoch) replaces
    the one-cycle LR; the learning rates the LR monitor logs per epoch are StepLR's, not a ramp."""
    import csv

    sched = "+model.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:1,gamma:0.5}"
    m = run_cfg([*SMALL_YY, "model.epochs=3", sched, "model.scheduler_interval=epoch", "~callbacks.progress_bar"],
                tmp_path)  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    lr_key = next(k for k in rows[0] if k.startswith("lr-"))
    lrs = [float(r[lr_key]) for r in rows if r[lr_key]]
    assert lrs == pytest.approx([0.1, 0.05, 0.025])  # model.optim.lr = 0.1, halved each epoch
    assert m["test/acc"] > 0.5
    # a typo in the scheduler's arguments is a one-line error before any work
    from kaelab.config import check_values
    from kaelab.errors import ConfigError

    bad = compose_cfg([*SMALL_YY, sched.replace("gamma", "gama")], tmp_path / "bad")
    with pytest.raises(ConfigError, match=r"model.scheduler.gama: .*StepLR takes no argument 'gama'"):
        check_values(bad)
