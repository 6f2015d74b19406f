"""Config schema of the DMD layer-replacement stage (``dmd`` group; conf/dmd/*.yaml).

Vocabulary (see kaelab/models/trajectory.py): a network is read as a trajectory through depth,
``s_0 -> s_1 -> ... -> s_T``; the *span* ``[a, b]`` is the stretch of states that the DMD operator
replaces; with ``h`` delays the hybrid computes ``s_a .. s_{a+h}`` with the true network (the seed
window) and the operator carries the remaining ``b - a - h`` transitions ("layers replaced").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kaelab.errors import ConfigError, check_choice

INITS = ("kaiming", "identity")  # dmd.scaling.init
SELECTS = ("none", "val")  # dmd.select
DTYPE_NAMES = ("float32", "float64")  # dmd.dtype


@dataclass
class ScalingConfig:
    """The paper's "layer scaling" of a plain MLP (used when the base net is not residual).

    ``n_layers`` new Linear+ReLU layers (square, width = input width of ``layer``, unless ``width``
    is set) are inserted in front of the frozen hidden layer ``model.layers[layer]`` and trained with
    a Huber loss so that that layer's output (the downstream activation) matches the original
    network's. Each sample then has ``n_layers + 2`` states: the layer's input, the n new states,
    and the layer's output.
    ``n_layers: 0`` skips scaling: the trajectory is then the network's own states (a plain MLP's
    hidden layers, a residual net's blocks: conf/dmd/resmlp.yaml). Scaling applies to any network
    whose trajectory has state ``layer`` (its producing module is the one scaled).
    """

    # index of the hidden layer in front of which the new layers are inserted
    layer: int = 1
    # new Linear+ReLU layers inserted (0: no scaling, the network's own states)
    n_layers: int = 10
    # width of the new layers (null: the scaled layer's input width, square layers as in the paper);
    # the first maps the input width up, the last back down
    width: Optional[int] = None
    # training epochs of the new layers
    epochs: int = 30
    n_train: int = 0  # training samples the new layers are fitted on (random subset; 0 = all)
    # batch size of the new layers' training
    batch_size: int = 256
    # peak AdamW learning rate of the new layers (triangular schedule)
    lr: float = 1e-3
    # AdamW weight decay of the new layers
    weight_decay: float = 0.0
    # delta of the Huber loss on the frozen layer's output
    huber_delta: float = 1.0
    # kaelab's addition (0 = the paper's scaling): weight of a delay-linearity loss, the relative
    # error of the batch's least-squares delay operator (linear_h delays) rolled out along the
    # scaled trajectory (kaelab/dmd/layer_scaling.py: delay_linearity_error)
    linear_weight: float = 0.0
    # delays of the delay-linearity loss's operator (default: dmd.h)
    linear_h: int = "${..h}"  # type: ignore[assignment]
    linear_warmup: float = 0.25  # fraction of the epochs over which the linearity weight ramps up from 0
    init: str = "kaiming"  # kaiming (as the authors' code) | identity (W = I + noise, b = 0)
    init_noise: float = 0.05  # std of the noise added to the identity init
    # seed of the new layers' initialisation and batches
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class GridConfig:
    """The (h, rank, span) grid written to ``dmd_grid.csv``; empty lists fall back to the main value."""

    # delays to try (empty: dmd.h alone)
    h: list[int] = field(default_factory=list)
    # SVD ranks to try (empty: dmd.rank alone)
    rank: list[int] = field(default_factory=list)
    # replaced spans [a, b] to try (empty: dmd.span alone)
    span: list[list[int]] = field(default_factory=list)


@dataclass
class DMDConfig:
    h: int = 2  # number of delays: the delay window holds h + 1 consecutive states
    rank: int = -1  # SVD truncation rank (PyDMD svd_rank): > 0 fixed, -1 the numerical rank of X
    # replaced span [a, b] as state indices (negative counts from the end); null = the whole trajectory
    span: Optional[list[int]] = None
    tikhonov: Optional[float] = None  # PyDMD's tikhonov_regularization of the reduced operator
    # another estimator as a _target_ config (conf/dmd/estimator/: fbdmd, tlsdmd; built with
    # svd_rank=the resolved rank and fitted on the same per-sample delay pairs); None: kaelab's
    # projected DMD (PyDMD's DMDOperator without DMD.fit's extra SVDs)
    estimator: Optional[Any] = None
    # how the operator continues the delay window (kaelab/dmd/rollout.py): reduced (iterate the r x r
    # operator) | shift (exact window shift, predict the newest state) | a {_target_: ...} config
    rollout: Any = "reduced"
    n_fit: int = 5000  # training samples whose trajectories fit the DMD (random subset; 0 = all)
    # seed of the random subset of n_fit training samples
    fit_seed: int = "${seed}"  # type: ignore[assignment]
    # pick (h, rank, span) from the grid by validation accuracy (never by test accuracy)
    select: str = "none"  # none | val
    # the (h, rank, span) grid written to dmd_grid.csv
    grid: GridConfig = field(default_factory=GridConfig)
    # the paper's layer scaling of a plain MLP
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    dtype: str = "float32"  # float32 | float64: dtype of the hybrid's operator in torch (fits are float64)
    # batch size of the hybrid network's evaluation
    eval_batch_size: int = 4096
    # write the DMD figures into the run dir (and send them to the loggers)
    figures: bool = True
    boundary_resolution: int = 200  # Yin-Yang decision-boundary grid points per axis


def valid_rank(rank: int) -> bool:
    """A DMD rank setting: a positive int, or -1 for the numerical rank."""
    return rank > 0 or rank == -1


def check_rank(rank: int, key: str = "dmd.rank") -> None:
    """The one check of a DMD rank (the config check runs it before any work, the fit again)."""
    if not valid_rank(rank):
        raise ConfigError(f"{key} must be a positive int or -1 (numerical rank), got {rank}")


# lowest allowed value of every size, count and weight of the group (None: not set, not checked)
AT_LEAST = {
    "h": 0,
    "n_fit": 0,
    "eval_batch_size": 1,
    "boundary_resolution": 2,
    "tikhonov": 0,
    "scaling.layer": 0,
    "scaling.n_layers": 0,
    "scaling.width": 1,
    "scaling.epochs": 1,
    "scaling.n_train": 0,
    "scaling.batch_size": 1,
    "scaling.weight_decay": 0,
    "scaling.linear_weight": 0,
    "scaling.linear_h": 0,
    "scaling.linear_warmup": 0,
    "scaling.init_noise": 0,
}
ABOVE_ZERO = ("scaling.lr", "scaling.huber_delta")


def _merged(cfg: Any, overrides: dict[str, Any] | None = None) -> DictConfig:
    """DMDConfig's defaults merged with ``cfg`` (Hydra node, dict or dataclass) and ``overrides``."""
    if cfg is None:
        cfg = {}
    elif dataclasses.is_dataclass(cfg):
        cfg = dataclasses.asdict(cfg)
    elif isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(DMDConfig), cfg, overrides or {})
    except OmegaConfBaseException as err:  # an unknown key or a value of the wrong type
        raise ConfigError(f"dmd.{err.full_key}: {str(err).splitlines()[0]}") from None
    for key in ("fit_seed", "scaling.seed"):
        if OmegaConf.select(merged, key, throw_on_resolution_failure=False) is None:
            OmegaConf.update(merged, key, 0)
    return merged


def _leaves(node: Any, key: str) -> Iterator[tuple[str, Any]]:
    """(config key, value) of every leaf under ``node`` (a resolved container)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{key}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{key}[{i}]")
    else:
        yield key, node


def _check_sizes(cfg: DictConfig) -> None:
    for key, low in AT_LEAST.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value < low:
            raise ConfigError(f"dmd.{key}={value} must be >= {low}")
    for key in ABOVE_ZERO:
        if not OmegaConf.select(cfg, key) > 0:
            raise ConfigError(f"dmd.{key}={OmegaConf.select(cfg, key)} must be > 0")
    sc = cfg.scaling
    if sc.linear_warmup > 1:
        raise ConfigError(f"dmd.scaling.linear_warmup={sc.linear_warmup} must be in [0, 1] (a fraction of the epochs)")
    if sc.n_layers > 0:  # the scaled trajectory has n_layers + 2 states, whatever the network
        from kaelab.dmd.delay import check_delay

        check_delay(cfg.h, sc.n_layers + 2)
        if sc.linear_weight > 0 and sc.linear_h > sc.n_layers:
            raise ConfigError(f"dmd.scaling.linear_h={sc.linear_h} must be in 0..n_layers={sc.n_layers}")
    check_rank(cfg.rank)
    for i, h in enumerate(cfg.grid.h):
        if h < 0:
            raise ConfigError(f"dmd.grid.h[{i}]={h} must be >= 0")
    for i, rank in enumerate(cfg.grid.rank):
        check_rank(rank, f"dmd.grid.rank[{i}]")
    for key, span in [("dmd.span", cfg.span), *((f"dmd.grid.span[{i}]", s) for i, s in enumerate(cfg.grid.span))]:
        if span is not None and len(span) != 2:
            raise ConfigError(f"{key} must be [first_state, last_state], got {list(span)}")


def check_dmd_config(dmd_cfg: Any) -> DictConfig:
    """The one check of the ``dmd`` group, before any work: every float finite, every size, count
    and weight in range, every named choice known, the ``_target_`` configs (``estimator``,
    ``rollout``) buildable. One-line ConfigError naming the key; returns the merged DMDConfig.
    (Checks that need the network, the span and ``h`` against its trajectory, run when it is read.)"""
    cfg = _merged(dmd_cfg)
    for key, value in _leaves(OmegaConf.to_container(cfg, resolve=True), "dmd"):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value} must be a finite number")
    _check_sizes(cfg)
    check_choice(cfg.select, SELECTS, "dmd.select")
    check_choice(cfg.dtype, DTYPE_NAMES, "dmd.dtype")
    check_choice(cfg.scaling.init, INITS, "dmd.scaling.init")
    from kaelab.dmd.rollout import rollout_node  # imported on use: kaelab.config imports this module
    from kaelab.instantiate import check_target

    check_target(rollout_node(cfg.rollout), "dmd.rollout")
    if cfg.estimator is not None:
        check_target(cfg.estimator, "dmd.estimator", svd_rank=1)
    return cfg


def as_dmd_config(cfg: Any = None, **overrides: Any) -> DictConfig:
    """The checked DMDConfig (``check_dmd_config``) from a Hydra node (resolved against its root), a
    dict or a dataclass, with ``overrides`` (DMDConfig's keys, e.g. ``h=1, scaling={"n_layers": 0}``)
    on top.

    The seeds default to ``${seed}`` of the full Hydra config; outside one they fall back to 0.
    """
    return check_dmd_config(_merged(cfg, overrides))


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
