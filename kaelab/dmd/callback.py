"""``DMDReplacement``: the Koopman layers paper's study as a Lightning callback.

Attach it to the Trainer that fits a base classifier (it runs in ``on_fit_end``), or call
``DMDReplacement(cfg).run(module, datamodule, out_dir)`` on an already trained one (``task=dmd``
does that with the cached base model). A run

1. reads the network as a trajectory through depth (kaelab/models/trajectory.py: the states named
   by ``model.trajectory`` or the network's ``trajectory_spec()``), with the paper's layer scaling
   when ``dmd.scaling.n_layers > 0`` (kaelab/dmd/layer_scaling.py);
2. fits DMD on paired delay snapshots of training trajectories for every (h, rank, span) of the
   grid (kaelab/dmd/operator.py) and scores each hybrid network (kaelab/dmd/hybrid.py);
3. writes ``dmd_grid.csv``, ``dmd_metrics.json`` and the figures into ``out_dir`` and sends the
   scalars and images to the loggers.

The callback only orchestrates; each job has its module: the config (``dmd/config.py``), the
datamodule adapter (``dmd/data.py``), the cached layer scaling (``dmd/layer_scaling.py``), the grid
study (``dmd/study.py``) and the files it writes (``dmd/report.py``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig
from torch import nn

from kaelab.dmd.config import as_dmd_config, smoke_config
from kaelab.dmd.data import split_tensors
from kaelab.dmd.layer_scaling import cached_scaling
from kaelab.dmd.report import figures, write_grid
from kaelab.dmd.study import (
    accuracy,
    collect_states,
    dmd_n_states,
    grid_points,
    predict,
    run_grid,
    select_result,
)
from kaelab.errors import ConfigError
from kaelab.metrics import accuracy_report, scalars, write_metrics
from kaelab.models.trajectory import Trajectory

__all__ = ["DMDReplacement", "as_dmd_config", "smoke_config", "split_tensors"]

log = logging.getLogger(__name__)


class DMDReplacement(Callback):
    """Replace a span of a trained classifier's layers by a time-delay DMD operator and report it.

    ``cfg``: a ``dmd`` config (DMDConfig / dict / Hydra node). ``out_dir``: where files go (default:
    the trainer's root dir). ``cache_dir`` + ``cache_key`` (the base model's key): cache the layer
    scaling there so that a sweep over h / rank trains it once. ``trajectory``: which modules form
    the network's states (``model.trajectory``; None: the network's own ``trajectory_spec()``).
    """

    def __init__(
        self,
        cfg: Any = None,
        out_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        cache_key: str | None = None,
        trajectory: dict | None = None,
    ):
        super().__init__()
        self.trajectory_spec = trajectory
        self.cfg = as_dmd_config(cfg)
        if self.cfg.get("estimator") is not None:  # a bad _target_ fails here, before any work
            from kaelab.instantiate import check_target

            check_target(self.cfg.estimator, "dmd.estimator", svd_rank=1)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.cache_dir, self.cache_key = cache_dir, cache_key
        self.metrics: dict[str, Any] = {}

    # ------------------------------------------------------------------------------ Lightning hook
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking or trainer.interrupted:
            return
        dm = trainer.datamodule
        if dm is None:
            raise ConfigError("DMDReplacement needs the Trainer to be fitted with a datamodule")
        out_dir = self.out_dir or Path(trainer.default_root_dir)
        cfg = smoke_config(self.cfg) if trainer.fast_dev_run else None  # the callback's own config stays as given
        self.metrics = self.run(pl_module, dm, out_dir, loggers=trainer.loggers, step=trainer.global_step, cfg=cfg)

    # ----------------------------------------------------------------------------------- the study
    def run(
        self,
        pl_module: nn.Module,
        datamodule: L.LightningDataModule,
        out_dir: str | Path,
        loggers: Sequence = (),
        step: int = 0,
        cfg: DictConfig | None = None,
    ) -> dict[str, Any]:
        """Run the study on a trained classifier (a module with ``.net``, or the net itself);
        ``cfg``: a dmd config for this run only (default: the callback's)."""
        cfg = self.cfg if cfg is None else cfg
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        # a private CPU copy in eval mode: the caller's module (maybe mid-Trainer) is left untouched
        net = copy.deepcopy(getattr(pl_module, "net", pl_module)).cpu().eval()
        for p in net.parameters():
            p.requires_grad_(False)
        for stage in ("fit", "test"):
            datamodule.setup(stage)
        train, val, test = (split_tensors(datamodule, s) for s in ("train", "val", "test"))
        if train is None or test is None:
            raise ConfigError("DMD replacement needs a train and a test split")
        if cfg.select == "val" and val is None:
            raise ConfigError("dmd.select=val needs a validation split")

        traj = Trajectory.of(net, train[0][:2], self.trajectory_spec)
        n_states = dmd_n_states(traj.n_states, cfg)
        main, points = grid_points(cfg, n_states)  # validates h / span before any training
        metrics: dict[str, Any] = {}
        scaled = None
        if cfg.scaling.n_layers > 0:
            scaled, info = cached_scaling(traj, train[0], cfg.scaling, self.cache_dir, self.cache_key)
            metrics.update(info)
            traj = traj.scaled(cfg.scaling.layer, list(scaled))

        n = len(train[0]) if cfg.n_fit <= 0 else min(cfg.n_fit, len(train[0]))
        idx = torch.randperm(len(train[0]), generator=torch.Generator().manual_seed(int(cfg.fit_seed)))[:n]
        S_train = collect_states(traj, train[0][idx], cfg.eval_batch_size)
        splits = {"test": test} if val is None else {"val": val, "test": test}
        results = run_grid(traj, S_train, points, cfg, splits)
        write_grid(out_dir / "dmd_grid.csv", results)
        best = select_result(results, main, cfg.select)

        a, b = best.point.span
        best.fit.operator.save(out_dir / "dmd_operator.safetensors", span_start=a, span_end=b)
        x_te, y_te = test
        num_classes = int(max(y_te.max().item(), train[1].max().item())) + 1
        logits = predict(best.hybrid, x_te, cfg.eval_batch_size)
        report = accuracy_report(logits, y_te, num_classes, prefix="dmd/test_")
        row = best.row
        metrics.update(
            {
                "dmd/base_test_acc": accuracy(net, x_te, y_te, cfg.eval_batch_size),
                "dmd/test_acc": report["dmd/test_acc"],
                "dmd/test_acc_macro": report["dmd/test_acc_macro"],
                "dmd/layers_replaced": row["layers_replaced"],
                "dmd/original_layers_replaced": row["original_layers_replaced"],
                "dmd/span_transitions": row["span_transitions"],
                "dmd/carried_fraction": row["layers_replaced"] / row["span_transitions"],
                "dmd/span_start": row["span_start"],
                "dmd/span_end": row["span_end"],
                "dmd/n_states": n_states,
                "dmd/h": row["h"],
                "dmd/rank": row["rank_used"],
                "dmd/rank_requested": row["rank"],
                "dmd/fit_time_s": best.fit.fit_time_s,
                "dmd/n_fit_pairs": best.fit.n_pairs,
                "dmd/spectral_radius": row["spectral_radius"],
                "dmd/test_state_rel_err": row["test_state_rel_err"],
                "dmd/rollout": cfg.rollout,
                "dmd/estimator": (cfg.estimator or {}).get("_target_", "kaelab projected DMD"),
                "dmd/grid_points": len(results),
            }
        )
        if "val_acc" in row:
            metrics["dmd/val_acc"] = row["val_acc"]
        if scaled is not None:
            metrics["dmd/scaled_test_acc"] = accuracy(traj, x_te, y_te, cfg.eval_batch_size)
            # the scaled layer itself is the last transition: does the operator carry it?
            metrics["dmd/carries_original_layer"] = int(row["span_end"] == n_states - 1)
        if cfg.figures:
            images = figures(out_dir, best, S_train, net, datamodule, test, cfg.boundary_resolution)
            metrics["dmd/figures"] = sorted(p.name for p in images.values())
            from kaelab.viz.dmd import log_images

            log_images(loggers, images, step)
        write_metrics(out_dir / "dmd_metrics.json", metrics)
        for lg in loggers:
            lg.log_metrics(scalars(metrics), step=step)
            lg.save()
        log.info(
            "DMD replacement: base test acc %.4f -> hybrid %.4f, operator carries %d of %d transitions "
            "(h=%d, rank=%d, span=[%d, %d])",
            metrics["dmd/base_test_acc"], metrics["dmd/test_acc"], row["layers_replaced"],
            row["span_transitions"], row["h"], row["rank_used"], row["span_start"], row["span_end"],
        )  # fmt: skip
        return metrics
