"""``DMDReplacement``: the Koopman layers paper's study as a Lightning callback.

Attach it to the Trainer that fits a base classifier (it runs in ``on_fit_end``), or call
``run(model, data)`` on an already trained one (``task=dmd`` does that with the cached base model).
It needs no Hydra config: in a notebook,

    cb = DMDReplacement(h=1, rank=-1, span=[0, 4], scaling={"n_layers": 0})
    metrics = cb.run(traj, {"train": (x, y), "test": (x_te, y_te)})   # writes nothing
    cb.best.hybrid(x_new)                                              # the hybrid network

A run

1. reads the network as a trajectory through depth (kaelab/models/trajectory.py: a Trajectory as
   given, or the states named by ``model.trajectory`` or the network's ``trajectory_spec()``), with
   the paper's layer scaling when ``dmd.scaling.n_layers > 0`` (kaelab/dmd/layer_scaling.py);
2. fits DMD on paired delay snapshots of training trajectories for every (h, rank, span) of the
   grid (kaelab/dmd/operator.py) and scores each hybrid network (kaelab/dmd/hybrid.py);
3. with an ``out_dir``, writes ``dmd_metrics.json`` first, then ``dmd_grid.csv``,
   ``dmd_operator.safetensors`` and the figures there (one that cannot be written, e.g. on a full
   disk, is a warning and ``dmd/artifact_errors``); sends the scalars (and figures) to the loggers given.

The callback only orchestrates; each job has its module: the config and its one check
(``dmd/config.py``), the data (``dmd/data.py``), the cached layer scaling (``dmd/layer_scaling.py``),
the grid study and its metrics (``dmd/study.py``) and the files it writes (``dmd/report.py``).
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
from torch import nn

from kaelab.dmd.config import as_dmd_config, smoke_config
from kaelab.dmd.data import split_tensors, study_splits
from kaelab.dmd.layer_scaling import cached_scaling
from kaelab.dmd.report import figures, write_grid
from kaelab.dmd.study import (
    PointResult,
    dmd_n_states,
    fit_positions,
    fit_states,
    grid_points,
    position_metrics,
    run_grid,
    select_result,
    study_metrics,
)
from kaelab.errors import ConfigError
from kaelab.fileio import optional_output
from kaelab.metrics import scalars, write_metrics
from kaelab.models.positions import PositionView, positions_metrics, positions_spec, sequence_layout
from kaelab.models.trajectory import Trajectory

__all__ = ["DMDReplacement", "as_dmd_config", "smoke_config", "split_tensors"]

log = logging.getLogger(__name__)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A private CPU copy in eval mode without gradients of the network (``model.net`` if it has
    one): the caller's module, maybe mid-Trainer, is left untouched."""
    net = copy.deepcopy(getattr(model, "net", model)).cpu().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class DMDReplacement(Callback):
    """Replace a span of a trained classifier's layers by a time-delay DMD operator and report it.

    ``cfg``: a ``dmd`` config (DMDConfig / dict / Hydra node; None: the schema's defaults) and
    ``overrides``: DMDConfig keys on top of it (``h=1, rank=8, span=[0, 4], scaling={...}``); both
    are checked here (``check_dmd_config``), before any work. ``out_dir``: where files go (None:
    nothing is written by ``run``; ``on_fit_end`` then uses the trainer's root dir). ``cache_dir`` +
    ``cache_key`` (the base model's key): cache the layer scaling there so that a sweep over h /
    rank trains it once. ``trajectory``: which modules form the network's states
    (``model.trajectory``; None: the network's own ``trajectory_spec()``). ``positions``
    (``model.positions``: ``{"per_window": P, "seed": S}``): a sequence model, fitted on the states
    of single token positions (every stage's draw of them) and replaced position by position inside
    the whole network, scored by next-token accuracy and bits (``dmd/block/*``: each block replaced
    alone, for the grid's one-transition spans). After a run, ``metrics``,
    ``results`` (every grid point) and ``best`` (the reported point: ``best.hybrid`` is the hybrid
    network, ``best.fit.operator`` the operator) hold its outcome. (Koopman layers paper, Method
    Summary: the hybrid network runs to the span, seeds the delay window with the first h + 1 true
    states and lets the linear operator predict the rest.)

    Examples:
        >>> import torch, kaelab as kl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 6),
        ...                           torch.nn.Tanh(), torch.nn.Linear(6, 3))
        >>> traj = kl.trajectory(net, torch.randn(4, 2), stages=["0", "1", "2", "3"], head="4")
        >>> x, y = torch.randn(300, 2), torch.randint(0, 3, (300,))
        >>> cb = kl.DMDReplacement(h=1, span=[0, 3], scaling={"n_layers": 0})
        >>> _ = cb.run(traj, {"train": (x, y), "val": (x, y), "test": (x, y)})
        >>> cb.metrics["dmd/layers_replaced"], cb.metrics["dmd/test_state_rel_err"] < 0.5
        (2, True)
    """

    def __init__(
        self,
        cfg: Any = None,
        out_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        cache_key: str | None = None,
        trajectory: dict | None = None,
        positions: dict | None = None,
        **overrides: Any,
    ):
        super().__init__()
        self.cfg = as_dmd_config(cfg, **overrides)
        self.trajectory_spec = trajectory
        self.positions = positions_spec(positions)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.cache_dir, self.cache_key = cache_dir, cache_key
        self.metrics: dict[str, Any] = {}
        self.results: list[PointResult] = []
        self.best: PointResult | None = None

    # ------------------------------------------------------------------------------ Lightning hook
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking or trainer.interrupted:
            return
        dm = trainer.datamodule
        if dm is None:
            raise ConfigError("DMDReplacement needs the Trainer to be fitted with a datamodule")
        out_dir = self.out_dir or Path(trainer.default_root_dir)
        cfg = smoke_config(self.cfg) if trainer.fast_dev_run else None  # the callback's own config stays as given
        self.run(pl_module, dm, out_dir, loggers=trainer.loggers, step=trainer.global_step, cfg=cfg)

    # ----------------------------------------------------------------------------------- the study
    def run(
        self,
        model: nn.Module,
        data: Any,
        out_dir: str | Path | None = None,
        loggers: Sequence = (),
        step: int = 0,
        cfg: Any = None,
    ) -> dict[str, Any]:
        """Run the study on a trained classifier (a Trajectory, a network, or a module with ``.net``).

        ``data``: a datamodule or ``{"train": (x, y), "val": (x, y), "test": (x, y)}`` (val optional).
        ``out_dir``: where the files go (default: the callback's; None: nothing is written).
        ``cfg``: a dmd config for this run only (default: the callback's). Returns the metrics.
        """
        cfg = self.cfg if cfg is None else as_dmd_config(cfg)
        out_dir = self.out_dir if out_dir is None else Path(out_dir)
        net = frozen_copy(model)
        splits = study_splits(data, cfg.select)
        x_train = splits["train"][0]
        traj = net if isinstance(net, Trajectory) else Trajectory.of(net, x_train[:2], self.trajectory_spec)
        layout = self.layout(traj, cfg)
        n_states = dmd_n_states(traj.n_states, cfg)
        main, points = grid_points(cfg, n_states)  # h / span against the trajectory, before any training
        traj, metrics = self.scaled(traj, x_train, cfg.scaling)
        where = None if layout is None else fit_positions(splits["train"][1], cfg, self.positions)
        S_train = fit_states(traj, x_train, cfg, where)
        evaluated = {k: v for k, v in splits.items() if k != "train"}
        self.results = run_grid(traj, S_train, points, cfg, evaluated, layout)
        self.best = select_result(self.results, main, cfg.select)
        if layout is not None:  # the base network's logits per position, also when given as a Trajectory
            net = PositionView(traj)
        metrics.update(study_metrics(net, self.best, self.results, cfg, n_states, splits))
        if layout is not None:
            metrics.update(positions_metrics(self.positions, {"fit": where}))
            metrics.update(position_metrics(net, self.best, self.results, cfg, splits["test"], traj.names,
                                            metrics["dmd/base_test_acc"]))  # fmt: skip
        images = {}
        if out_dir is not None:
            write_metrics(out_dir / "dmd_metrics.json", metrics)  # first: an output that fails loses no result
            images = self.write(out_dir, S_train, net, data, splits["test"], cfg, metrics)
            if images:
                metrics["dmd/figures"] = sorted(p.name for p in images.values())
            what = str(out_dir / "dmd_metrics.json")  # again, with what the outputs added
            optional_output(metrics, "dmd", what, lambda: write_metrics(out_dir / "dmd_metrics.json", metrics))
        optional_output(metrics, "dmd", "the loggers", lambda: log_study(loggers, metrics, images, step))
        self.metrics = metrics
        return metrics

    def layout(self, traj: Trajectory, cfg: Any) -> tuple[int, int] | None:
        """``(tokens, dim)`` of a sequence model read at token positions (``positions``; its states
        must be ``[tokens, dim]``), None otherwise. Layer scaling inserts layers into a plain MLP
        and has no meaning for a stream of positions."""
        if self.positions is None:
            return None
        check_positions_scaling(cfg, self.positions)
        return sequence_layout(traj)

    def scaled(self, traj: Trajectory, x_train: torch.Tensor, sc: Any) -> tuple[Trajectory, dict[str, Any]]:
        """The trajectory with the paper's layer scaling (cached when the callback has a cache) and
        the scaling's metrics; as given when ``sc.n_layers`` is 0."""
        if sc.n_layers <= 0:
            return traj, {}
        layers, info = cached_scaling(traj, x_train, sc, self.cache_dir, self.cache_key)
        return traj.scaled(sc.layer, list(layers)), dict(info)

    def write(self, out_dir: Path, S_train: torch.Tensor, net: nn.Module, data: Any, test, cfg: Any, metrics) -> dict:
        """The grid table, the reported point's operator and (``cfg.figures``) the figures into
        ``out_dir``, each optional (``optional_output``: a failed write is noted in ``metrics``);
        returns the figures' paths by logger tag."""
        best, grid, operator = self.best, out_dir / "dmd_grid.csv", out_dir / "dmd_operator.safetensors"
        span = dict(zip(("span_start", "span_end"), best.point.span, strict=True))
        optional_output(metrics, "dmd", str(grid), lambda: write_grid(grid, self.results))
        optional_output(metrics, "dmd", str(operator), lambda: best.fit.operator.save(operator, **span))
        if not cfg.figures:
            return {}
        images = optional_output(
            metrics, "dmd", f"{out_dir}/*.png",
            lambda: figures(out_dir, best, S_train, net, data, test, cfg.boundary_resolution),
        )  # fmt: skip
        return images or {}


def check_positions_scaling(cfg: Any, positions: Any) -> None:
    """Layer scaling inserts layers into a plain MLP: it has no meaning for a sequence model read at
    token positions (``positions`` set)."""
    if positions is not None and cfg.scaling.n_layers > 0:
        raise ConfigError(
            f"dmd.scaling.n_layers={cfg.scaling.n_layers} with model.positions: layer scaling is for plain MLPs; "
            "set dmd.scaling.n_layers=0 to replace a sequence model's own blocks"
        )


def log_study(loggers: Sequence, metrics: dict[str, Any], images: dict[str, Path], step: int) -> None:
    """The scalars and figures to the loggers, and one line to the log."""
    if images:
        from kaelab.viz.dmd import log_images

        log_images(loggers, images, step)
    for lg in loggers:
        lg.log_metrics(scalars(metrics), step=step)
        lg.save()
    m = metrics
    log.info(
        "DMD replacement: base test acc %.4f -> hybrid %.4f, operator carries %d of %d transitions "
        "(h=%d, rank=%d, span=[%d, %d])",
        m["dmd/base_test_acc"], m["dmd/test_acc"], m["dmd/layers_replaced"], m["dmd/span_transitions"],
        m["dmd/h"], m["dmd/rank"], m["dmd/span_start"], m["dmd/span_end"],
    )  # fmt: skip
