"""``hydra/launcher=slots``: sweep jobs in parallel, each with its own GPU (in a fresh process) or CPU share
(``kaelab.launcher``)."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class SlotsLauncherConf:
    _target_: str = "hydra_plugins.kaelab_launcher.slots_launcher.SlotsLauncher"
    # parallel jobs: None = one per visible GPU, or on a CPU-only machine one per core
    n_jobs: Optional[int] = None
    # auto: one GPU per job when GPUs are visible, else CPU slots | always | never
    gpus: str = "auto"
    # torch / OpenMP threads per job: None = usable cores // n_jobs
    threads_per_job: Optional[int] = None
    # CPU slots only: a fresh process for every job too (GPU slots always start one per job); by
    # default each CPU slot keeps one worker process, which imports torch and Lightning once
    fresh_cpu_process: bool = False


ConfigStore.instance().store(group="hydra/launcher", name="slots_schema", node=SlotsLauncherConf, provider="kaelab")


class SlotsLauncher(Launcher):
    def __init__(
        self,
        n_jobs: Optional[int] = None,
        gpus: str = "auto",
        threads_per_job: Optional[int] = None,
        fresh_cpu_process: bool = False,
    ):
        self.n_jobs, self.gpus, self.threads_per_job = n_jobs, gpus, threads_per_job
        self.fresh_cpu_process = fresh_cpu_process
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from kaelab.launcher import launch

        return launch(self, job_overrides, initial_job_idx)


__all__ = ["SlotsLauncher", "SlotsLauncherConf"]
