"""Sweeps that scale: hydra/launcher=slots (its own GPU or CPU share per job; a fresh process per GPU
job, one kept worker per CPU slot), a failing grid point and a dying worker inside a parallel sweep,
the sweep's table and sweep_summary.json."""

import json
import os

import pytest

from conftest import compose_cfg, run_cli
from kaelab.errors import ConfigError
from kaelab.launcher import Slot, make_slots

TINY_KAE = [
    "data.n_train=300",
    "data.n_val=50",
    "data.n_test=100",
    "model.epochs=3",
    "kae.epochs=2",
    "callbacks=minimal",
    "~logger.csv",
]


def test_slots_split_cpu_cores_between_jobs():
    slots = make_slots(None, "auto", None, cores=8, gpu_ids=[])
    assert len(slots) == 8 and all(s.gpu is None and s.threads == 1 for s in slots)
    slots = make_slots(2, "auto", None, cores=8, gpu_ids=[])
    assert [s.threads for s in slots] == [4, 4]  # 2 jobs x 4 threads = the 8 cores, not 2 x 8
    assert slots[0].env()["OMP_NUM_THREADS"] == "4" and slots[0].env()["CUDA_VISIBLE_DEVICES"] == ""
    assert make_slots(3, "never", 2, cores=2, gpu_ids=[0, 1])[0].threads == 2  # explicit threads win


def test_slots_give_each_job_its_own_gpu():
    slots = make_slots(None, "auto", None, cores=16, gpu_ids=[0, 1, 2, 3])
    assert [s.gpu for s in slots] == [0, 1, 2, 3] and all(s.threads == 4 for s in slots)
    assert [s.env()["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1", "2", "3"]
    # CUDA_VISIBLE_DEVICES=5,7 on the launcher: the jobs get 5 and 7
    assert [s.gpu for s in make_slots(None, "auto", None, cores=4, gpu_ids=[5, 7])] == [5, 7]
    assert make_slots(None, "never", None, cores=4, gpu_ids=[0, 1])[0].gpu is None


@pytest.mark.parametrize(
    "args, message",
    [
        ((None, "always", None, 4, []), "no GPU is visible"),
        ((5, "auto", None, 4, [0, 1]), "n_jobs=5 > 2 visible GPUs"),
        ((0, "auto", None, 4, []), "n_jobs=0 must be >= 1"),
        ((2, "sometimes", None, 4, []), "gpus must be auto, always or never"),
        ((2, "auto", 0, 4, []), "threads_per_job=0 must be >= 1"),
    ],
)
def test_bad_slot_settings(args, message):
    with pytest.raises(ConfigError, match=message):
        make_slots(*args)


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    from kaelab.launcher import visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert visible_gpus() == [3, 1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    assert Slot(0, None, 1).describe() == "slot 0 (CPU, 1 threads)"


def test_launcher_configs_compose(tmp_path):
    from hydra import compose, initialize_config_module

    with initialize_config_module(version_base="1.3", config_module="kaelab.conf"):
        cfg = compose("config", overrides=["hydra/launcher=slots", "hydra.launcher.n_jobs=2"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.kaelab_launcher.slots_launcher.SlotsLauncher"
    assert (launcher.n_jobs, launcher.gpus, launcher.threads_per_job) == (2, "auto", None)
    assert compose_cfg(["+experiment=yinyang_kae"], tmp_path).task == "kae"


def test_parallel_sweep_on_cpu_slots_survives_a_failing_point(tmp_path):
    """2 seeds x 2 lambdas on 2 CPU slots, one lambda invalid: the other jobs finish on one shared
    base model, each slot's jobs in that slot's one worker process with half the cores; the sweep
    exits 2 and its summary and table list the failures."""
    args = ["-m", "hydra/launcher=slots", "hydra.launcher.n_jobs=2", "seed=0,1", "kae.lambdas.iso=0,-1", *TINY_KAE]
    proc = run_cli(args, tmp_path, timeout=900)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("kaelab: error: 2 of 4 sweep jobs failed (job 1, 3; first: kae.lambdas.iso=-1")
    sweep = next((tmp_path / "multirun" / "yinyang_kae").iterdir())
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["n_ok"], summary["n_failed"], summary["n_missing"]) == (2, 2, 0)
    assert {f["overrides"]["kae.lambdas.iso"] for f in summary["failed"]} == {"-1"}
    assert summary["artifact_builds"]["base_model"] == 1  # the jobs shared one base model
    slots = [json.loads((sweep / j / "slot.json").read_text()) for j in ("0", "1", "2", "3")]
    pid_of_slot = {s["slot"]: s["pid"] for s in slots}
    assert len(set(pid_of_slot.values())) == 2  # two workers, one per slot, each reused by its jobs
    assert all(pid_of_slot[s["slot"]] == s["pid"] for s in slots)
    cores = len(os.sched_getaffinity(0))
    assert all(s["torch_threads"] == max(1, cores // 2) and s["cuda_visible_devices"] == "" for s in slots)
    md = (sweep / "aggregate.md").read_text()
    assert "| 0 | 2 |" in md  # kae.lambdas.iso=0: both seeds, no failure
    assert "| -1 | 0 (2 failed/missing) |" in md and "must be >= 0" in md


DIE = '''
import os
import lightning as L


class DieAt(L.Callback):
    """Kills its own process (no cleanup, as the OOM killer would) when value == at."""

    def __init__(self, value, at):
        self.value, self.at = value, at

    def on_train_start(self, trainer, module):
        if self.value == self.at:
            os._exit(9)
'''


@pytest.mark.parametrize("fresh", [False, True])
def test_a_dying_worker_fails_its_job_alone(tmp_path, fresh):
    """Three jobs on one CPU slot, the second kills its own process: it fails with the reason in
    its error.txt, the third runs in a new process, and the sweep ends non-zero naming the job
    (kept workers: a new worker replaces the dead one; fresh_cpu_process=true: a process per job)."""
    (tmp_path / "dying.py").write_text(DIE)  # importable: python -m puts the working dir on sys.path
    args = [
        "-m", "hydra/launcher=slots", "hydra.launcher.n_jobs=1", f"hydra.launcher.fresh_cpu_process={fresh}",
        "kae.lambdas.iso=0,0.5,1e-3", "+callbacks.die._target_=dying.DieAt",
        "+callbacks.die.value=${kae.lambdas.iso}", "+callbacks.die.at=0.5", *TINY_KAE,
    ]  # fmt: skip
    proc = run_cli(args, tmp_path, timeout=900)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "1 of 3 sweep jobs failed (job 1" in proc.stderr.strip().splitlines()[-1]
    sweep = next((tmp_path / "multirun" / "yinyang_kae").iterdir())
    assert "process died" in (sweep / "1" / "error.txt").read_text()
    pids = [json.loads((sweep / j / "slot.json").read_text())["pid"] for j in ("0", "2")]
    assert pids[0] != pids[1]  # the dead worker's slot got a new process
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["n_ok"], summary["n_failed"]) == (2, 1)


def test_slurm_config_composes(tmp_path):
    from hydra import compose, initialize_config_module

    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=30"]
    with initialize_config_module(version_base="1.3", config_module="kaelab.conf"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 30)
    assert launcher.max_num_timeout == 0 and launcher.array_parallelism > 1


def test_submitit_local_executor_runs_the_sweep(tmp_path):
    """The submitit launcher (the SLURM one's local executor): each job a fresh process, results and
    the sweep's summary as with any launcher."""
    tiny = ["+experiment=yinyang_mlp", "data.n_train=200", "data.n_val=50", "data.n_test=50", "model.epochs=2"]
    args = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "seed=0,1", *tiny]
    proc = run_cli([*args, "callbacks=minimal", "~logger.csv", "trainer.num_threads=1"], tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = next((tmp_path / "multirun" / "yinyang_mlp").iterdir())
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["n_ok"], summary["n_failed"]) == (2, 0)
    assert len(list((sweep / ".submitit").rglob("*_result.pkl"))) == 2  # submitit ran both jobs
    assert "| 2 |" in (sweep / "aggregate.md").read_text()  # one row, n = 2 seeds


def test_ray_launcher_runs_a_sweep_on_a_local_ray_instance(tmp_path):
    """hydra/launcher=ray (hydra-ray-launcher) for real: a local Ray instance runs 2 seeds x 2
    lambdas, one lambda invalid; the valid jobs share one base model, the failures are listed and the
    sweep exits 2, as with every launcher."""
    args = ["-m", "hydra/launcher=ray", "seed=0,1", "kae.lambdas.iso=0,-1", *TINY_KAE]
    proc = run_cli(args, tmp_path, timeout=900)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Ray Launcher is launching 4 jobs" in proc.stderr + proc.stdout
    sweep = next((tmp_path / "multirun" / "yinyang_kae").iterdir())
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["n_ok"], summary["n_failed"], summary["n_missing"]) == (2, 2, 0)
    assert {f["overrides"]["kae.lambdas.iso"] for f in summary["failed"]} == {"-1"}
    assert summary["artifact_builds"]["base_model"] == 1
    for job in ("0", "2"):
        assert json.loads((sweep / job / "metrics.json").read_text())["kae/test_acc"] > 0


def test_ray_launcher_configs_for_gpus_and_clusters_compose(tmp_path):
    from hydra import compose, initialize_config_module

    overrides = [
        "hydra/launcher=ray",
        "+hydra.launcher.ray.remote.num_gpus=1",  # one GPU per job: Ray sets CUDA_VISIBLE_DEVICES
        "hydra.launcher.ray.init.address=ray://head:10001",  # an existing cluster
    ]
    with initialize_config_module(version_base="1.3", config_module="kaelab.conf"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert launcher.ray.remote.num_gpus == 1 and launcher.ray.init.address == "ray://head:10001"
