"""Config schema of the DMD layer-replacement stage (``dmd`` group; conf/dmd/*.yaml).

Vocabulary (see kaelab/models/trajectory.py): a network is read as a trajectory through depth,
``s_0 -> s_1 -> ... -> s_T``; the *span* ``[a, b]`` is the stretch of states that the DMD operator
replaces; with ``h`` delays the hybrid computes ``s_a .. s_{a+h}`` with the true network (the seed
window) and the operator carries the remaining ``b - a - h`` transitions ("layers replaced").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf


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

    layer: int = 1
    n_layers: int = 10
    # width of the new layers (null: the scaled layer's input width, square layers as in the paper);
    # the first maps the input width up, the last back down
    width: Optional[int] = None
    epochs: int = 30
    n_train: int = 0  # training samples the new layers are fitted on (random subset; 0 = all)
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    huber_delta: float = 1.0
    # kaelab's addition (0 = the paper's scaling): weight of a delay-linearity loss, the relative
    # error of the batch's least-squares delay operator (linear_h delays) rolled out along the
    # scaled trajectory (kaelab/dmd/layer_scaling.py: delay_linearity_error)
    linear_weight: float = 0.0
    linear_h: int = "${..h}"  # type: ignore[assignment]
    linear_warmup: float = 0.25  # fraction of the epochs over which the linearity weight ramps up from 0
    init: str = "kaiming"  # kaiming (as the authors' code) | identity (W = I + noise, b = 0)
    init_noise: float = 0.05  # std of the noise added to the identity init
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class GridConfig:
    """The (h, rank, span) grid written to ``dmd_grid.csv``; empty lists fall back to the main value."""

    h: list[int] = field(default_factory=list)
    rank: list[int] = field(default_factory=list)
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
    rollout: str = "reduced"  # reduced: iterate the r x r operator | shift: exact window shift, predict newest
    n_fit: int = 5000  # training samples whose trajectories fit the DMD (random subset; 0 = all)
    fit_seed: int = "${seed}"  # type: ignore[assignment]
    # pick (h, rank, span) from the grid by validation accuracy (never by test accuracy)
    select: str = "none"  # none | val
    grid: GridConfig = field(default_factory=GridConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    dtype: str = "float32"  # float32 | float64: dtype of the hybrid's operator in torch (fits are float64)
    eval_batch_size: int = 4096
    figures: bool = True
    boundary_resolution: int = 200  # Yin-Yang decision-boundary grid points per axis


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
