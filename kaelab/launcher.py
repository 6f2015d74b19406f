"""Sweep jobs in parallel on one machine, each with its own slot.

``hydra/launcher=slots`` (conf/hydra/launcher/slots.yaml; the Hydra plugin class is
``hydra_plugins.kaelab_launcher.SlotsLauncher``). A slot is one GPU, or on a CPU-only machine a
share of the CPU cores. Jobs run in worker processes (loky, the process pool behind joblib, one
single-worker executor per slot) whose environment is set before the interpreter starts:
``CUDA_VISIBLE_DEVICES`` names the slot's GPU (or nothing), ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` the slot's threads.

* A GPU slot starts a new process for every job, so a job never inherits CUDA state or a device
  choice from another job (what Hydra's joblib launcher, whose workers are reused, cannot promise).
* A CPU slot keeps its worker process from job to job (``fresh_cpu_process=true``: a new one per
  job too). There is no device state to inherit, and a process's start-up, mostly importing torch,
  Lightning and torchmetrics (about 9 s here), is paid once per slot instead of once per job: with
  fresh processes a 4-job Yin-Yang sweep on 2 slots was no faster than the same sweep run
  sequentially in one process (``scripts/bench_sweep.py``). A reused worker runs its jobs one
  after another exactly as the basic launcher runs every job in one process.

N jobs on C cores use C // N threads each instead of N x C.

Why not an existing launcher: joblib reuses its worker processes (CUDA_VISIBLE_DEVICES is read once
per process); submitit's local executor starts every job at once and gives each the same GPUs; Ray
(``hydra/launcher=ray``) does both right but starts a Ray instance, which is the cluster choice.

A job whose process dies (killed, out of memory) fails alone: its ``error.txt`` says how, and the
sweep goes on (``kaelab.run_guard.RunGuard`` then lists it in ``sweep_summary.json``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaelab.errors import ERROR_FILE, ConfigError

log = logging.getLogger(__name__)

SLOT_FILE = "slot.json"


@dataclass(frozen=True)
class Slot:
    """Where one job runs: a GPU index (None: CPU only) and its number of CPU threads."""

    index: int
    gpu: int | None
    threads: int

    def env(self) -> dict[str, str]:
        threads = str(self.threads)
        return {
            "CUDA_VISIBLE_DEVICES": "" if self.gpu is None else str(self.gpu),
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "KAELAB_SLOT": str(self.index),
        }

    def describe(self) -> str:
        where = f"GPU {self.gpu}" if self.gpu is not None else "CPU"
        return f"slot {self.index} ({where}, {self.threads} threads)"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[int]:
    """GPU indices this process may hand out: ``CUDA_VISIBLE_DEVICES`` if set, else every GPU
    (counted without initialising CUDA in this process). On Linux without a GPU driver (no
    /proc/driver/nvidia, /dev/nvidiactl or ROCm's /dev/kfd) none, without importing torch: that
    import took 2.8 s of a 4-job CPU sweep's launcher, which otherwise never needs torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [int(x) for x in env.split(",") if x.strip().lstrip("-").isdigit() and int(x) >= 0]
    if sys.platform.startswith("linux") and not any(
        Path(p).exists() for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd")
    ):
        return []
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:  # no torch / no driver: no GPU
        return []


def make_slots(
    n_jobs: int | None, gpus: str, threads_per_job: int | None, cores: int, gpu_ids: list[int]
) -> list[Slot]:
    """The slots of a sweep. ``gpus``: ``auto`` (one GPU per slot when GPUs are visible, else CPU
    slots), ``always`` (an error without GPUs) or ``never``. ``n_jobs`` None: one slot per GPU, or
    on the CPU one per core. Threads: ``threads_per_job`` or cores // slots (at least 1)."""
    if gpus not in ("auto", "always", "never"):
        raise ConfigError(f"hydra.launcher.gpus must be auto, always or never, got {gpus!r}")
    use_gpus = gpus == "always" or (gpus == "auto" and bool(gpu_ids))
    if use_gpus and not gpu_ids:
        raise ConfigError("hydra.launcher.gpus=always but no GPU is visible (CUDA_VISIBLE_DEVICES / the driver)")
    if n_jobs is None:
        n_jobs = len(gpu_ids) if use_gpus else cores
    if n_jobs < 1:
        raise ConfigError(f"hydra.launcher.n_jobs={n_jobs} must be >= 1")
    if use_gpus and n_jobs > len(gpu_ids):
        raise ConfigError(f"hydra.launcher.n_jobs={n_jobs} > {len(gpu_ids)} visible GPUs (one GPU per job)")
    if threads_per_job is not None and threads_per_job < 1:
        raise ConfigError(f"hydra.launcher.threads_per_job={threads_per_job} must be >= 1")
    threads = threads_per_job or max(1, cores // n_jobs)
    return [Slot(i, gpu_ids[i] if use_gpus else None, threads) for i in range(n_jobs)]


def _run_in_slot(idx, overrides, hydra_context, config, task_function, singleton_state, slot_info):
    """Body of one job, in its fresh process (loky pickles this call with cloudpickle)."""
    import torch

    torch.set_num_threads(slot_info["threads"])
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    t0 = time.time()
    ret = execute_job(idx, overrides, hydra_context, config, task_function, singleton_state)
    from omegaconf import OmegaConf

    out = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None) if ret.hydra_cfg else None
    job_dir = Path(str(out)) if out else Path(str(config.hydra.sweep.dir)) / str(idx)
    info = dict(slot_info, pid=os.getpid(), torch_threads=torch.get_num_threads(), wall_s=time.time() - t0)
    info["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    try:
        if torch.cuda.is_available():
            info["gpu_name"] = torch.cuda.get_device_name(0)
        (job_dir / SLOT_FILE).write_text(json.dumps(info, indent=2))
    except (OSError, RuntimeError):  # a record of where the job ran, never a reason to fail it
        pass
    return ret


def _new_worker(slot: Slot) -> Any:
    from joblib.externals.loky.process_executor import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=1, env=slot.env())


def launch(launcher: Any, job_overrides, initial_job_idx: int):
    """Run the jobs, at most one per slot at a time (see the module's docstring for processes)."""
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals

    setup_globals()
    config = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    slots = make_slots(launcher.n_jobs, launcher.gpus, launcher.threads_per_job, usable_cores(), visible_gpus())
    reuse_cpu = not getattr(launcher, "fresh_cpu_process", False)
    kept = reuse_cpu and slots[0].gpu is None
    log.info("Launching %d jobs on %d slots (%s): %s", len(job_overrides), len(slots),
             "a worker process per CPU slot" if kept else "a fresh process per job",
             ", ".join(s.describe() for s in slots))  # fmt: skip
    singleton_state = Singleton.get_state()
    pending = deque(enumerate(job_overrides))
    free = deque(slots)
    workers: dict[int, Any] = {}  # slot index -> its kept executor (CPU slots, reused)
    running: dict[Any, tuple[int, Slot, Any]] = {}
    results: dict[int, JobReturn] = {}
    try:
        while pending or running:
            while pending and free:
                i, overrides = pending.popleft()
                slot = free.popleft()
                idx = initial_job_idx + i
                log.info("\t#%d on %s : %s", idx, slot.describe(), " ".join(filter_overrides(overrides)))
                executor = workers.get(slot.index) or _new_worker(slot)
                if reuse_cpu and slot.gpu is None:
                    workers[slot.index] = executor
                info = {"slot": slot.index, "gpu": slot.gpu, "threads": slot.threads}
                future = executor.submit(
                    _run_in_slot, idx, list(overrides), launcher.hydra_context, config, launcher.task_function,
                    singleton_state, info,
                )  # fmt: skip
                running[future] = (i, slot, executor)
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                i, slot, executor = running.pop(future)
                free.append(slot)
                try:
                    results[i] = future.result()
                except Exception as err:  # the job's process died: that job fails, the sweep goes on
                    workers.pop(slot.index, None)  # the slot's next job gets a new process
                    executor.shutdown(wait=False)
                    results[i] = _died(err, i, initial_job_idx, slot, sweep_dir, job_overrides[i])
                    continue
                if workers.get(slot.index) is not executor:
                    # its worker exits on its own (a torch process takes about 2 s to): the slot's
                    # next job need not wait for it
                    executor.shutdown(wait=False)
    finally:
        for executor in workers.values():  # all at once, while the sweep's tables are written
            executor.shutdown(wait=False)
    return [results[i] for i in range(len(job_overrides))]


def _died(err: Exception, i: int, initial_job_idx: int, slot: Slot, sweep_dir: Path, overrides) -> Any:
    """The result of a job whose process died, recorded as the job's error (as a job's own error
    is): COMPLETED with no value, so that the sweeper goes on and ``kaelab.run_guard.RunGuard``
    reports it with the others at the end."""
    from hydra.core.utils import JobReturn, JobStatus

    reason = " ".join(f"{type(err).__name__}: {err}".split())
    log.error("job #%d died in %s: %s", initial_job_idx + i, slot.describe(), reason)
    job_dir = sweep_dir / str(initial_job_idx + i)
    if job_dir.is_dir():
        (job_dir / ERROR_FILE).write_text(f"the job's process died ({reason})\n")
    ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
    ret.return_value = None
    return ret
