"""Config schema of the KAE stage (``kae`` group; conf/kae/*.yaml). Defaults: Yin-Yang (App. C)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class KAELambdas:
    """Weights of the four losses (Eq. 7): recon (3), linear (4), state (5), isometry (6)."""

    recon: float = 1.0
    linear: float = 1.0
    state: float = 1.0
    iso: float = 1.0


@dataclass
class KAEPathConfig:
    """The KAE's intermediate steps against the base model's intermediate blocks (kaelab.koopman.path).

    Blocks strictly between ``source_layer`` and ``target_layer`` are mapped to KAE steps, evenly
    spaced over the k steps (``steps``: null) or as listed (one step in 1..k-1 per block, increasing).
    ``lam`` > 0 adds the path loss (decoded step t_l vs preprocessed block l) to Eq. 7 with this
    weight (``lam`` and not ``lambda``, a Python keyword, as ``edit.lam``); 0 leaves the KAE, and its
    cache key, as without this option. ``report`` measures path fidelity in the KAE report.
    """

    lam: float = 0.0
    steps: Optional[list[int]] = None
    report: bool = True


@dataclass
class KAEConfig:
    source_layer: Any = 0  # x_i: index into the base model's representations (or a module name)
    target_layer: Any = -1  # x_j: default the last block's output (the penultimate representation)
    q: Optional[int] = None  # PCA components kept in preprocessing (None: all)
    scale: float = 100.0  # Frobenius norm of the preprocessed training matrix
    hidden: list[int] = field(default_factory=lambda: [30])  # encoder hidden widths (decoder mirrors)
    latent_dim: int = 20
    negative_slope: float = 0.01  # LeakyReLU
    k: int = 100  # steps of exp(G/k)
    g_init: str = "identity"  # identity | zeros | random | identity_random
    lambdas: KAELambdas = field(default_factory=KAELambdas)
    recon_reduction: str = "mean"  # mean (the reference: x_i and x_j averaged) | sum (kaelab <= 0.1)
    lr: float = 0.05  # the paper: 0.1 (see conf/kae/yinyang.yaml)
    weight_decay: float = 5e-4
    warmup_frac: float = 0.2
    # max global gradient norm (torch clip_grad_norm_) for the KAE alone (trainer.gradient_clip_val
    # would also change the base model's key); None: off, as the reference
    grad_clip: Optional[float] = None
    # roll back an epoch whose val/loss exceeds this factor times the best so far and halve the lr
    # (kaelab.rollback.SpikeRollback; not in the paper); None: off, as the reference
    spike_rollback: Optional[float] = None
    path: KAEPathConfig = field(default_factory=KAEPathConfig)  # intermediate blocks (not in the paper)
    epochs: int = 1000
    batch_size: int = 1024
    seed: int = "${seed}"  # type: ignore[assignment]
