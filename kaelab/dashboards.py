"""One Weights & Biases run per job (``logger=wandb``), opened before the job's first stage and
finished when the job ends, also when it fails and when sweep jobs share a worker process.

The run holds the resolved config, every metric the stages' Lightning loggers send (they attach to
this run instead of opening their own), each figure the job wrote (every PNG under the run
directory, as ``wandb.Image`` under ``figures/<path>``) and ``metrics.json`` as the run summary.
Runs are grouped by sweep (``<name>/<sweep dir>``; a single run: ``<name>``) and tagged with the
experiment name and the task, so the Table 1 dashboard is a W&B group-by on the swept keys (README,
"Sweeps"). ``logger.wandb.mode=offline`` writes everything under ``<run dir>/wandb/`` with no
network (``wandb sync <run dir>/wandb/offline-run-*`` uploads it later).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kaelab.errors import check_choice

log = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")


def wandb_enabled(cfg: DictConfig) -> bool:
    w = OmegaConf.select(cfg, "logger.wandb", default=None)
    if w is None:
        return False
    check_choice(w.get("mode", "online"), WANDB_MODES, "logger.wandb.mode")
    return w.get("mode", "online") != "disabled"


def job_identity() -> tuple[str | None, str | None]:
    """(sweep id, job number) when this process runs a Hydra multirun job, else (None, None)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ValueError, ImportError):  # not under Hydra (compose API, python -m kaelab.table1)
        return None, None
    if hc.mode != RunMode.MULTIRUN:
        return None, None
    return Path(str(hc.sweep.dir)).name, str(hc.job.num)


def run_settings(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """``wandb.init`` arguments of this job: name, group (sweep), tags (experiment, task)."""
    w = cfg.logger.wandb
    sweep, num = job_identity()
    group = w.get("group") or (f"{cfg.name}/{sweep}" if sweep else cfg.name)
    tags = list(dict.fromkeys([str(cfg.name), f"task:{cfg.task}", *map(str, w.get("tags") or [])]))
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation only Hydra's runtime can resolve: log it unresolved
        config = OmegaConf.to_container(cfg, resolve=False)
    return {
        "mode": w.get("mode", "online"),
        "project": w.get("project", "kaelab"),
        "entity": w.get("entity"),
        "group": group,
        "tags": tags,
        "name": f"{cfg.name}-{num}" if num is not None else str(cfg.name),
        "job_type": str(cfg.task),
        "dir": str(run_dir),
        "config": config,
    }


def start_run(cfg: DictConfig, run_dir: Path) -> Any | None:
    """Open this job's W&B run (finishing any run a previous job left open in this process)."""
    if not wandb_enabled(cfg):
        return None
    import wandb

    if wandb.run is not None:
        wandb.run.finish(exit_code=1)
    run_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(**run_settings(cfg, run_dir))


def finish_run(run: Any, run_dir: Path, metrics: dict[str, Any] | None) -> None:
    """Log the job's figures, put metrics.json in the summary, and finish the run. ``metrics``
    None: the job failed (the run is finished with a non-zero exit code)."""
    if run is None:
        return
    import wandb

    try:
        if metrics is not None:
            rel = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*.png"))
            images = {f"figures/{r.with_suffix('').as_posix()}": run_dir / r for r in rel if "wandb" not in r.parts}
            if images:
                run.log({key: wandb.Image(str(path)) for key, path in images.items()})
            run.summary.update(metrics)
    finally:
        run.finish(exit_code=0 if metrics is not None else 1)
