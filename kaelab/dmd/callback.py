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
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from torch import nn

from kaelab.cache import ArtifactCache, config_key
from kaelab.dmd.config import DMDConfig
from kaelab.dmd.delay import paired_snapshots
from kaelab.dmd.layer_scaling import new_layers, train_scaling
from kaelab.dmd.operator import singular_values
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
from kaelab.fileio import write_csv
from kaelab.metrics import accuracy_report, scalars, write_metrics
from kaelab.models.trajectory import Trajectory

log = logging.getLogger(__name__)


def as_dmd_config(cfg: Any = None) -> DictConfig:
    """A validated DMDConfig from a Hydra node (resolved against its root), a dict or a dataclass.

    The seeds default to ``${seed}`` of the full Hydra config; outside one they fall back to 0.
    """
    if cfg is None:
        cfg = {}
    elif dataclasses.is_dataclass(cfg):
        cfg = dataclasses.asdict(cfg)
    elif isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    merged = OmegaConf.merge(OmegaConf.structured(DMDConfig), cfg)
    for key in ("fit_seed", "scaling.seed"):
        if OmegaConf.select(merged, key, throw_on_resolution_failure=False) is None:
            OmegaConf.update(merged, key, 0)
    return merged


def smoke_config(cfg: DictConfig) -> DictConfig:
    """The config for a ``trainer.fast_dev_run`` smoke test: one scaling epoch on 512 samples, 16
    fitting trajectories, the main grid point only, a coarse decision boundary."""
    cfg = cfg.copy()
    cfg.scaling.epochs = 1
    cfg.scaling.n_train = min(cfg.scaling.n_train, 512) if cfg.scaling.n_train > 0 else 512
    cfg.n_fit = min(cfg.n_fit, 16) if cfg.n_fit > 0 else 16
    cfg.grid.h, cfg.grid.rank, cfg.grid.span = [], [], []
    cfg.boundary_resolution = min(cfg.boundary_resolution, 32)
    return cfg


def split_tensors(dm: L.LightningDataModule, split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(inputs, labels) of a split: ``dm.tensors`` (kaelab datamodules) or the split's dataloader."""
    if hasattr(dm, "tensors"):
        try:
            return dm.tensors(split)
        except KeyError:
            return None
    loader = getattr(dm, f"{split}_dataloader")()
    if not loader:
        return None
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


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
            scaled, info = self._scaling(traj, train[0], cfg.scaling)
            metrics.update(info)
            traj = traj.scaled(cfg.scaling.layer, list(scaled))

        n = len(train[0]) if cfg.n_fit <= 0 else min(cfg.n_fit, len(train[0]))
        idx = torch.randperm(len(train[0]), generator=torch.Generator().manual_seed(int(cfg.fit_seed)))[:n]
        S_train = collect_states(traj, train[0][idx], cfg.eval_batch_size)
        splits = {"test": test} if val is None else {"val": val, "test": test}
        results = run_grid(traj, S_train, points, cfg, splits)
        self._write_grid(out_dir / "dmd_grid.csv", results)
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
            images = self._figures(out_dir, best, S_train, net, datamodule, test)
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

    # ------------------------------------------------------------------------------------ helpers
    def _scaling(self, net: Trajectory, x_train: torch.Tensor, sc: DictConfig) -> tuple[nn.Sequential, dict[str, float]]:
        """Layer scaling, from the artifact cache when a cache is configured (trained once per
        base model + scaling config ``sc``), else trained now."""
        if self.cache_dir is None or self.cache_key is None:
            return train_scaling(net, x_train, sc)
        key = config_key("dmd_scaling", self.cache_key, OmegaConf.to_container(sc, resolve=True))

        def build(tmp: Path) -> None:
            layers, info = train_scaling(net, x_train, sc)
            torch.save(layers.state_dict(), tmp / "scaled_layers.pt")
            (tmp / "info.json").write_text(json.dumps(info))

        manifest = {"base_model": self.cache_key, "scaling": OmegaConf.to_container(sc, resolve=True)}
        path = ArtifactCache(self.cache_dir).get_or_build("dmd_scaling", key, build, manifest)
        layers = new_layers(net.in_width(sc.layer), sc.n_layers, sc.width)
        layers.load_state_dict(torch.load(path / "scaled_layers.pt", weights_only=True))
        for p in layers.parameters():
            p.requires_grad_(False)
        return layers.eval(), json.loads((path / "info.json").read_text())

    @staticmethod
    def _write_grid(path: Path, results: list) -> None:
        fields = list(dict.fromkeys(k for r in results for k in r.row))
        write_csv(path, fields, ([r.row.get(k, "") for k in fields] for r in results))

    def _figures(self, out_dir: Path, best, S_train, net, datamodule, test) -> dict[str, Path]:
        from kaelab.viz.dmd import plot_decision_boundaries, plot_eigenvalues, plot_singular_values

        a, b = best.point.span
        h, op = best.point.h, best.fit.operator
        images = {
            "dmd/eigenvalues": plot_eigenvalues(
                op.eigs, out_dir / "dmd_eigenvalues.png",
                f"DMD eigenvalues (h={h}, rank={op.rank}, span [{a}, {b}]: {best.hybrid.layers_replaced} layers "
                f"replaced, {best.hybrid.original_layers_replaced} original)",
            ),
        }  # fmt: skip
        S = S_train[:, a : b + 1, : op.state_dim].double()
        spectra = {"no delays (h=0)": singular_values(paired_snapshots(S, 0)[0])}
        if h > 0:
            spectra[f"delays (h={h})"] = best.fit.singular_values
        images["dmd/singular_values"] = plot_singular_values(spectra, out_dir / "dmd_singular_values.png", op.rank)
        features = getattr(datamodule, "features", None)
        if type(datamodule).__name__ == "YinYangDataModule" and features is not None:
            from kaelab.data.yinyang import yinyang_features

            x_te, y_te = test
            images["dmd/decision_boundary"] = plot_decision_boundaries(
                {
                    f"original (test acc {accuracy(net, x_te, y_te):.3f})": net,
                    f"hybrid, DMD carries {best.hybrid.layers_replaced} layers "
                    f"({best.hybrid.original_layers_replaced} original) "
                    f"(test acc {accuracy(best.hybrid, x_te, y_te):.3f})": best.hybrid,
                },
                lambda pts: yinyang_features(pts, features),
                out_dir / "dmd_decision_boundary.png",
                resolution=self.cfg.boundary_resolution,
                points=(np.asarray(x_te[:, :2]), np.asarray(y_te)),
            )
        return images
