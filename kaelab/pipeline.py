"""Dispatch of ``cfg.task`` to its stage function; every run ends by writing ``metrics.json``."""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from kaelab.config import TASKS, check_values
from kaelab.dashboards import finish_run, start_run
from kaelab.errors import ConfigError, check_choice, writable_dir_problem
from kaelab.metrics import write_metrics
from kaelab.training import configure_runtime

log = logging.getLogger(__name__)

# task -> "module:function", imported lazily so a run only loads what it uses
TASK_FUNCTIONS = {
    "train": "kaelab.base_model:train_task",
    "kae": "kaelab.koopman.pipeline:kae_task",
    "dmd": "kaelab.dmd.pipeline:dmd_task",
    "edit": "kaelab.editing.pipeline:edit_task",
    "topology": "kaelab.topology.pipeline:topology_task",
    "spectrum": "kaelab.koopman.spectrum_pipeline:spectrum_task",
}


def run(cfg: DictConfig) -> dict[str, Any]:
    check_choice(cfg.task, TASKS, "task")
    check_values(cfg)
    # before any work: a run whose results could not be written must not start
    for key in ("run_dir", "cache_dir"):
        problem = writable_dir_problem(cfg.paths[key], f"paths.{key}")
        if problem:
            raise ConfigError(problem)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    configure_runtime(cfg)
    module_name, fn_name = TASK_FUNCTIONS[cfg.task].split(":")
    task_fn = getattr(importlib.import_module(module_name), fn_name)
    wandb_run = start_run(cfg, run_dir)  # logger=wandb: one W&B run for the whole job
    try:
        metrics = task_fn(cfg, run_dir)
        path = write_metrics(run_dir / "metrics.json", metrics)
    except BaseException:
        finish_run(wandb_run, run_dir, None)
        raise
    log.info("wrote %s", path)
    finish_run(wandb_run, run_dir, json.loads(path.read_text()))
    return metrics
