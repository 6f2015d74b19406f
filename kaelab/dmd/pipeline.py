"""``task=dmd``: DMD layer replacement on the (cached or given) base model (Koopman layers paper)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kaelab.base_model import base_model, train_task, trajectory_spec
from kaelab.dmd.callback import DMDReplacement, check_positions_scaling, smoke_config
from kaelab.dmd.study import dmd_n_states, grid_points
from kaelab.errors import ConfigError
from kaelab.models import build_net, stage_names
from kaelab.training import build_loggers

log = logging.getLogger(__name__)


def dmd_task(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Get the base model (``model.checkpoint``, the artifact cache, or trained now) and run
    ``DMDReplacement`` on it; its layer scaling is cached next to the base model. With
    ``trainer.fast_dev_run`` the stage shrinks to a smoke test (``smoke_config``)."""
    if cfg.dmd is None:
        raise ConfigError("task=dmd needs a dmd config: add +dmd=default or use +experiment=yinyang_dmd")
    positions = OmegaConf.select(cfg, "model.positions", default=None)
    replacement = DMDReplacement(cfg.dmd, trajectory=trajectory_spec(cfg), positions=positions)
    if cfg.trainer.fast_dev_run:
        replacement.cfg = smoke_config(replacement.cfg)
    # fail before training: the untrained network names its states
    names = stage_names(build_net(OmegaConf.to_container(cfg.model.net, resolve=True)), trajectory_spec(cfg))
    check_positions_scaling(replacement.cfg, positions)
    grid_points(replacement.cfg, dmd_n_states(len(names), replacement.cfg))
    bm = base_model(cfg, run_dir / "base_model")
    replacement.cache_dir, replacement.cache_key = cfg.paths.cache_dir, bm.key
    loggers = build_loggers(cfg.logger, run_dir, cfg.name)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=False))
    metrics = replacement.run(bm.module, bm.datamodule, run_dir, loggers=loggers)
    metrics["dmd/base_model_key"] = bm.key
    return metrics


def train_with_dmd(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """``task=train +dmd=...``: the base model's training run with ``DMDReplacement`` attached, so
    the study runs on the model when the fit ends (files in ``run_dir/dmd``); the run's metrics
    include the study's."""
    if "spawn" in str(cfg.trainer.strategy):
        raise ConfigError(
            "+dmd on a training run needs a single-process trainer (the DMD study runs in on_fit_end, "
            "inside the DDP workers): train with trainer=ddp, then run task=dmd on the cached model"
        )
    positions = OmegaConf.select(cfg, "model.positions", default=None)
    replacement = DMDReplacement(cfg.dmd, out_dir=run_dir / "dmd", trajectory=trajectory_spec(cfg), positions=positions)
    metrics = train_task(cfg, run_dir, callbacks=[replacement])
    return {**metrics, **replacement.metrics}
