"""Config schema of the KAE stage (``kae`` group; conf/kae/*.yaml). Defaults: Yin-Yang (App. C)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from kaelab.errors import ConfigError, check_choice

LOSS_TERMS = ("recon", "linear", "state", "iso")
RECON_REDUCTIONS = ("mean", "sum")  # mean: the reference's average of the two reconstruction losses
G_INITS = ("identity", "zeros", "random", "identity_random")


PATH_ROWS = ("all", "split")  # the batch rows each path block's loss sees (KoopmanAutoencoder._path_rows)


def check_kae_values(
    *,
    lambdas: Mapping[str, float] | None = None,
    k: int | None = None,
    g_init: str | None = None,
    grad_clip: float | None = None,
    recon_reduction: str | None = None,
    spike_rollback: float | None = None,
    path_lambda: float | None = None,
    path_steps: Sequence[int] | None = None,
    path_rows: str | None = None,
    **at_least_one: int,
) -> None:
    """Every KAE setting's own check, in one place, with the message naming its config key. Called
    with the config's values before any work (``check_kae_config``) and with their arguments by
    ``KoopmanAutoencoder`` and ``KoopmanOperator`` (used from a notebook); a value not given (None)
    is not checked. ``at_least_one``: integer settings that must be >= 1
    (epochs, batch_size, latent_dim)."""
    if recon_reduction is not None:
        check_choice(recon_reduction, RECON_REDUCTIONS, "kae.recon_reduction")
    if lambdas is not None:
        unknown = set(lambdas) - set(LOSS_TERMS)
        if unknown:
            raise ConfigError(f"unknown kae.lambdas entries {sorted(unknown)}; expected {LOSS_TERMS}")
        for term, value in lambdas.items():
            if value < 0:
                raise ConfigError(f"kae.lambdas.{term}={value} must be >= 0")
    for key, value in {"k": k, **at_least_one}.items():
        if value is not None and value < 1:
            raise ConfigError(f"kae.{key}={value} must be >= 1")
    if g_init is not None:
        check_choice(g_init, G_INITS, "kae.g_init")
    if grad_clip is not None and not grad_clip > 0:
        raise ConfigError(f"kae.grad_clip={grad_clip} must be > 0 (or null: no clipping)")
    if spike_rollback is not None and not spike_rollback > 1:
        raise ConfigError(f"kae.spike_rollback={spike_rollback} must be > 1 (or null: off)")
    if path_lambda is not None and path_lambda < 0:
        raise ConfigError(f"kae.path.lam={path_lambda} must be >= 0")
    if path_rows is not None:
        check_choice(path_rows, PATH_ROWS, "kae.path.rows")
    if path_steps is not None and k is not None and any(not 1 <= t <= k - 1 for t in path_steps):
        raise ConfigError(f"kae.path.steps={list(path_steps)} must lie within 1..{k - 1} (kae.k={k})")


def check_kae_config(kc: Any) -> None:
    """The ``kae`` group's check (``kaelab.config.check_values`` calls it once, before any work):
    its values through ``check_kae_values``. The layers it names are resolved against the network
    by ``kaelab.koopman.pipeline.kae_layers`` (that needs the network built)."""
    if kc is None:
        raise ConfigError("this task needs a kae config: add +kae=yinyang, or use +experiment=yinyang_kae")
    check_kae_values(
        lambdas=dict(kc.lambdas), k=kc.k, g_init=kc.g_init, grad_clip=kc.grad_clip,
        recon_reduction=kc.recon_reduction, spike_rollback=kc.spike_rollback, path_lambda=kc.path.lam,
        path_steps=None if kc.path.steps is None else list(kc.path.steps), path_rows=kc.path.rows,
        epochs=kc.epochs, batch_size=kc.batch_size, latent_dim=kc.latent_dim,
    )  # fmt: skip


@dataclass
class KAELambdas:
    """Weights of the four losses (Eq. 7): recon (3), linear (4), state (5), isometry (6)."""

    # weight of the reconstruction loss (Eq. 3)
    recon: float = 1.0
    # weight of the linear-dynamics loss in observable space (Eq. 4)
    linear: float = 1.0
    # weight of the state-prediction loss (Eq. 5)
    state: float = 1.0
    # weight of the isometry loss (Eq. 6)
    iso: float = 1.0


@dataclass
class KAEPathConfig:
    """The KAE's intermediate steps against the base model's intermediate blocks (kaelab.koopman.path).

    Blocks strictly between ``source_layer`` and ``target_layer`` are mapped to KAE steps, evenly
    spaced over the k steps (``steps``: null) or as listed (one step in 1..k-1 per block, increasing).
    ``lam`` > 0 adds the path loss (decoded step t_l vs preprocessed block l) to Eq. 7 with this
    weight (``lam`` and not ``lambda``, a Python keyword, as ``edit.lam``); 0 leaves the KAE, and its
    cache key, as without this option. ``report`` measures path fidelity in the KAE report.
    ``rows``: the batch rows each block's loss is taken on, ``all`` (one extra decoder pass per
    block) or ``split`` (block b on the b-th 1/n of the shuffled batch: an unbiased estimate of the
    same loss at one extra decoder pass in all; ``make bench``: ``kae_path/overhead_split``).
    """

    # weight of the path loss added to Eq. 7 (0: off)
    lam: float = 0.0
    # the KAE step of each intermediate block, in 1..k-1, increasing (null: evenly spaced)
    steps: Optional[list[int]] = None
    # measure path fidelity in the KAE report
    report: bool = True
    # batch rows each block's loss is taken on: all | split
    rows: str = "all"


@dataclass
class KAEConfig:
    source_layer: Any = 0  # x_i: index into the base model's representations (or a module name)
    target_layer: Any = -1  # x_j: default the last block's output (the penultimate representation)
    q: Optional[int] = None  # PCA components kept in preprocessing (None: all)
    scale: float = 100.0  # Frobenius norm of the preprocessed training matrix
    hidden: list[int] = field(default_factory=lambda: [30])  # encoder hidden widths (decoder mirrors)
    # dimension of the observable space (G and K are latent_dim x latent_dim)
    latent_dim: int = 20
    negative_slope: float = 0.01  # LeakyReLU
    k: int = 100  # steps of exp(G/k)
    g_init: str = "identity"  # identity | zeros | random | identity_random
    # weights of the four loss terms of Eq. 7
    lambdas: KAELambdas = field(default_factory=KAELambdas)
    recon_reduction: str = "mean"  # mean (the reference: x_i and x_j averaged) | sum (lambda_recon doubled)
    # peak learning rate of the KAE's one-cycle schedule (AdamW)
    lr: float = 0.05  # the paper: 0.1 (see conf/kae/yinyang.yaml)
    # AdamW weight decay of the KAE
    weight_decay: float = 5e-4
    # fraction of the KAE's steps over which the learning rate rises to lr
    warmup_frac: float = 0.2
    # max global gradient norm (torch clip_grad_norm_) for the KAE alone (trainer.gradient_clip_val
    # would also change the base model's key); None: off, as the reference
    grad_clip: Optional[float] = None
    # roll back an epoch whose val/loss exceeds this factor times the best so far and halve the lr
    # (kaelab.rollback.SpikeRollback; not in the paper); None: off, as the reference
    spike_rollback: Optional[float] = None
    path: KAEPathConfig = field(default_factory=KAEPathConfig)  # intermediate blocks (not in the paper)
    # KAE training epochs
    epochs: int = 1000
    # KAE training batch size
    batch_size: int = 1024
    # the KAE's seed (initialisation, batch order)
    seed: int = "${seed}"  # type: ignore[assignment]
