"""Dispatch of ``cfg.task`` to its stage function; every run ends by writing ``metrics.json``.

``run`` is the one entry point, for ``python -m kaelab`` and for a library caller with a composed
config: it checks the config (schema, values) once, before anything heavy is imported or done.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from kaelab.config import check_schema, check_values
from kaelab.dashboards import finish_run, start_run

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
TRAIN_WITH_DMD = "kaelab.dmd.pipeline:train_with_dmd"  # task=train +dmd=...: the study when the fit ends


def task_function(cfg: DictConfig):
    """The stage function of ``cfg.task`` (imported now)."""
    target = TRAIN_WITH_DMD if cfg.task == "train" and cfg.get("dmd") is not None else TASK_FUNCTIONS[cfg.task]
    module_name, fn_name = target.split(":")
    return getattr(importlib.import_module(module_name), fn_name)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Check ``cfg``, run its task into ``paths.run_dir`` and return the metrics written to
    ``metrics.json`` there; then the run's page, ``report.html`` (kaelab.report)."""
    t0 = time.perf_counter()
    check_schema(cfg)
    check_values(cfg)  # first: a typo costs a second, not the import of torch and Lightning
    from kaelab.metrics import write_metrics
    from kaelab.training import configure_runtime

    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    configure_runtime(cfg.trainer)
    task_fn = task_function(cfg)
    wandb_run = start_run(cfg, run_dir)  # logger=wandb: one W&B run for the whole job
    try:
        metrics = task_fn(cfg, run_dir)
        path = write_metrics(run_dir / "metrics.json", metrics)
    except BaseException:
        finish_run(wandb_run, run_dir, None)
        raise
    log.info("wrote %s", path)
    finish_run(wandb_run, run_dir, json.loads(path.read_text()))
    from kaelab.report import write_run_report, write_safely

    # after metrics.json: a page that cannot be rendered is one warning line, never a lost result
    write_safely(write_run_report, run_dir, cfg, time.perf_counter() - t0)
    return metrics
