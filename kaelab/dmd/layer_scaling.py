"""The Koopman layers paper's "layer scaling" of a trained network (Sec. 3, "scaling").

The trained network is frozen; ``n`` new Linear+ReLU layers (square, width = input width of the
module m_k producing state k of the network's trajectory, as in the paper; optionally wider inside)
are inserted in front of m_k and trained with a Huber loss so that the output of m_k (the
downstream activation) is the same as in the original network (for the paper's plain MLPs, m_k is
hidden layer ``layers[k]``):

    original:  u = m_0..m_{k-1}(x)          -> m_k(u)
    scaled:    u -> new_1 -> ... -> new_n   -> m_k(new(u))      (n + 2 states)

This follows the authors' code (``ScaledModel``: new layers of ``in_features`` width in front of
the frozen ``features[index]``, Huber loss with delta 1 on its output, AdamW); the n + 2 states
are then one trajectory through depth per sample for the DMD. kaelab adds, as options: wider new
layers (``width``), a delay-linearity loss (``linear_weight``, see ``train_scaling``), and always
redraws units that are dead at init (``revive_dead_units``).

The training loop is plain torch, not a Lightning Trainer, because it also runs inside the
``on_fit_end`` hook of another Trainer (kaelab/dmd/callback.py), which a nested Trainer would
re-enter; the data are in-memory tensors, so the loop is a few lines.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kaelab.cache import ArtifactCache, config_key, tensors_digest
from kaelab.dmd.config import INITS, ScalingConfig
from kaelab.errors import ConfigError, check_choice
from kaelab.models.trajectory import Trajectory
from kaelab.schedules import triangular_lr

log = logging.getLogger(__name__)


def check_scaling(n_states: int, layer: int, n_layers: int) -> None:
    """``layer`` must index one of the network's ``n_states`` trajectory states (its producing module is scaled)."""
    if not 0 <= layer < n_states:
        raise ConfigError(
            f"dmd.scaling.layer={layer} is not a hidden layer (trajectory state) of this network "
            f"(valid: 0..{n_states - 1})"
        )
    if n_layers < 0:
        raise ConfigError(f"dmd.scaling.n_layers must be >= 0, got {n_layers}")


def new_layers(
    in_width: int,
    n: int,
    width: int | None = ScalingConfig.width,
    init: str = ScalingConfig.init,
    noise: float = ScalingConfig.init_noise,
    seed: int = 0,
) -> nn.Sequential:
    """``n`` Linear+ReLU layers mapping ``in_width`` back to ``in_width``, through ``width`` (default:
    ``in_width``, square layers as in the paper; wider ones lift the trajectory into more dimensions).

    Init: Kaiming-normal weights with bias 0.01 as the authors' code, or ``identity``: W = I + noise
    (a near-identity map of the nonnegative input), b = 0.
    """
    check_choice(init, INITS, "dmd.scaling.init")
    width = width or in_width
    dims = [in_width] + [width] * (n - 1) + [in_width]
    g = torch.Generator().manual_seed(seed)
    layers = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            if init == "kaiming":
                lin.weight.normal_(0.0, (2.0 / a) ** 0.5, generator=g)
                lin.bias.fill_(0.01)
            else:
                lin.weight.copy_(torch.eye(b, a) + noise / a**0.5 * torch.randn(b, a, generator=g))
                lin.bias.zero_()
        layers.append(nn.Sequential(lin, nn.ReLU()))
    return nn.Sequential(*layers)


@torch.no_grad()
def revive_dead_units(layers: nn.Sequential, x: torch.Tensor, seed: int = 0, tries: int = 20) -> int:
    """Redraw (Kaiming) the rows of units that are zero on every sample of ``x``, layer by layer.

    A unit dead at init never gets a gradient; in a deep narrow ReLU chain one dead unit in the last
    new layer starves the frozen layer of an input for good (seen with about 1 seed in 3 on
    Yin-Yang). Returns the number of redrawn units.
    """
    g = torch.Generator().manual_seed(seed + 1)
    redrawn = 0
    for layer in layers:
        lin = layer[0]
        for _ in range(tries):
            dead = (layer(x) <= 0).all(0)
            if not dead.any():
                break
            k = int(dead.sum())
            lin.weight[dead] = torch.randn(k, lin.in_features, generator=g) * (2.0 / lin.in_features) ** 0.5
            lin.bias[dead] = 0.01
            redrawn += k
        x = layer(x)
    return redrawn


def delay_linearity_error(S: torch.Tensor, h: int, ridge: float = 1e-4) -> torch.Tensor:
    """How far a batch of trajectories ``S = [B, T+1, D]`` is from linear delay dynamics.

    Fits the newest-state predictor ``s_{t+1} = M [s_{t-h}, ..., s_t]`` by ridge least squares on
    the batch's paired delay snapshots (what the full-rank DMD fitted afterwards computes; written
    out here because the gradient must flow through the solve into the trajectories), rolls it out
    from the true seed window ``s_0 .. s_h`` and returns the relative squared error averaged over the
    predicted states, plus that of the last state alone (the one the rest of the network reads).
    """
    steps, d = S.shape[1], S.shape[2]
    X = torch.stack([S[:, t - h - 1 : t].flatten(1) for t in range(h + 1, steps)], 1).flatten(0, 1)
    Y = S[:, h + 1 :].flatten(0, 1)
    G = X.T @ X
    reg = ridge * G.diagonal().mean().clamp_min(1e-12)
    Mt = torch.linalg.solve(G + reg * torch.eye(len(G), dtype=G.dtype), X.T @ Y)
    z, err = S[:, : h + 1].flatten(1), S.new_zeros(())
    for t in range(h + 1, steps):
        s = z @ Mt
        err = err + (s - S[:, t]).pow(2).sum() / S[:, t].pow(2).sum().clamp_min(1e-12)
        z = torch.cat([z[:, d:], s], dim=1)
    last = (s - S[:, -1]).pow(2).sum() / S[:, -1].pow(2).sum().clamp_min(1e-12)
    return err / (steps - h - 1) + last


@contextmanager
def frozen(net: nn.Module) -> Iterator[nn.Module]:
    """``net`` in eval mode without gradients for the block; its modes are restored afterwards."""
    requires = [p.requires_grad for p in net.parameters()]
    was_training = net.training
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        yield net
    finally:
        for p, req in zip(net.parameters(), requires, strict=True):
            p.requires_grad_(req)
        net.train(was_training)


@torch.no_grad()
def scaling_targets(net: Trajectory, x_train: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs of the scaled module, its outputs in the original net) on ``cfg.n_train`` samples."""
    prefix, target_layer, _ = net.split(cfg.layer)
    if 0 < cfg.n_train < len(x_train):
        g = torch.Generator().manual_seed(int(cfg.seed))
        x_train = x_train[torch.randperm(len(x_train), generator=g)[: cfg.n_train]]
    s0 = torch.cat([prefix(xb) for xb in x_train.split(8192)])
    return s0, torch.cat([target_layer(sb) for sb in s0.split(8192)])


def scaling_loss(
    layers: nn.Sequential, target_layer: nn.Module, s: torch.Tensor, target: torch.Tensor, cfg: Any, dim: int, w: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, Huber term, linearity term) of one batch: Huber between the frozen layer's output
    through the new layers and its original output, plus ``w`` times ``delay_linearity_error`` of
    the zero-padded (to ``dim``) trajectory s_0 .. s_{n+1} when ``cfg.linear_weight > 0``."""
    states = [s]
    for layer in layers:
        states.append(layer(states[-1]))
    out = target_layer(states[-1])
    huber = nn.functional.huber_loss(out, target, delta=cfg.huber_delta)
    if cfg.linear_weight <= 0:
        return huber, huber, torch.zeros(())
    S = torch.stack([nn.functional.pad(t, (0, dim - t.shape[1])) for t in [*states, out]], 1)
    lin = delay_linearity_error(S, int(cfg.linear_h))
    return huber + w * lin, huber, lin


def fit_new_layers(
    layers: nn.Sequential, target_layer: nn.Module, s0: torch.Tensor, target: torch.Tensor, cfg: Any, dim: int,
    log_every: int = 0,
) -> tuple[float, float]:  # fmt: skip
    """AdamW with a triangular learning rate over ``cfg.epochs``; the mean (Huber, linearity) terms
    of the last epoch."""
    opt = torch.optim.AdamW(layers.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = triangular_lr(opt, max(1, cfg.epochs * -(-len(s0) // cfg.batch_size)), warmup_frac=0.1)
    g = torch.Generator().manual_seed(int(cfg.seed))
    layers.train()
    for epoch in range(cfg.epochs):
        # the linearity weight ramps up linearly over the first `linear_warmup` of the epochs, so
        # that the layers first reproduce the downstream activation (else they can collapse)
        w = min(1.0, epoch / max(1.0, cfg.linear_warmup * cfg.epochs)) * cfg.linear_weight
        sums = torch.zeros(2)
        for idx in torch.randperm(len(s0), generator=g).split(cfg.batch_size):
            loss, huber, lin = scaling_loss(layers, target_layer, s0[idx], target[idx], cfg, dim, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sums += torch.stack([huber.detach(), lin.detach()]) * len(idx)
        if log_every and (epoch + 1) % log_every == 0:
            mean = (sums / len(s0)).tolist()
            log.info("scaling epoch %d/%d: huber %.3e, linearity %.3e", epoch + 1, cfg.epochs, *mean)
    layers.eval()
    huber_mean, lin_mean = (sums / len(s0)).tolist()
    return huber_mean, lin_mean


def train_scaling(
    net: Trajectory, x_train: torch.Tensor, cfg: Any, log_every: int = 0
) -> tuple[nn.Sequential, dict[str, float]]:
    """Train the new layers of ``cfg`` (a checked ScalingConfig: ``as_dmd_config(...).scaling``) in
    front of the frozen module producing state ``cfg.layer`` of the trajectory ``net``
    (``Trajectory.scaled`` then inserts them).

    Loss: Huber between the frozen layer's output through the new layers and in the original net
    (the paper). With ``cfg.linear_weight > 0`` (kaelab's addition) it adds that weight (ramped up
    over ``cfg.linear_warmup`` of the epochs) times ``delay_linearity_error`` of the whole
    zero-padded trajectory s_0 .. s_{n+1} with ``cfg.linear_h`` delays: the new layers then learn a
    trajectory that linear delay dynamics continue, which the DMD fitted afterwards (by PyDMD, on
    the true trajectories, as always) carries over many layers.
    """
    check_scaling(net.n_states, cfg.layer, cfg.n_layers)
    width = net.in_width(cfg.layer)
    dim = max(width, net.widths[cfg.layer], cfg.width or 0)
    layers = new_layers(width, cfg.n_layers, cfg.width, cfg.init, cfg.init_noise, seed=int(cfg.seed))
    with frozen(net):
        s0, target = scaling_targets(net, x_train, cfg)
        revived = revive_dead_units(layers, s0[:4096], seed=int(cfg.seed))
        t0 = time.perf_counter()
        huber, lin = fit_new_layers(layers, net.split(cfg.layer)[1], s0, target, cfg, dim, log_every)
    info = {"scaling/train_huber": huber, "scaling/time_s": time.perf_counter() - t0, "scaling/revived_units": revived}
    if cfg.linear_weight > 0:
        info["scaling/train_linearity_err"] = lin
    for p in layers.parameters():
        p.requires_grad_(False)
    return layers, info


def cached_scaling(
    net: Trajectory, x_train: torch.Tensor, sc: Any, cache_dir: str | Path | None, base_key: str | None
) -> tuple[nn.Sequential, dict[str, float]]:
    """``train_scaling`` through the artifact cache (stage ``dmd_scaling``, keyed by the base model's
    key, the content hash of ``net``'s weights, so that a base model rebuilt with other weights under
    its key gets its own, and the scaling config), so that a sweep over h / rank trains it once;
    without a cache (``cache_dir`` or ``base_key`` None) trained now."""
    from omegaconf import OmegaConf

    if cache_dir is None or base_key is None:
        return train_scaling(net, x_train, sc)
    settings = OmegaConf.to_container(sc, resolve=True) if OmegaConf.is_config(sc) else dict(sc)
    weights = tensors_digest(net.state_dict())
    key = config_key("dmd_scaling", base_key, weights, settings)

    def build(tmp: Path) -> None:
        layers, info = train_scaling(net, x_train, sc)
        torch.save(layers.state_dict(), tmp / "scaled_layers.pt")
        (tmp / "info.json").write_text(json.dumps(info))

    def load(path: Path) -> tuple[nn.Sequential, dict[str, float]]:
        layers = new_layers(net.in_width(sc.layer), sc.n_layers, sc.width)
        layers.load_state_dict(torch.load(path / "scaled_layers.pt", weights_only=True))
        return layers, json.loads((path / "info.json").read_text())

    manifest = {"base_model": base_key, "base_weights": weights, "scaling": settings}
    # a file the loader cannot read makes the cache rebuild the entry (ArtifactCache.load)
    layers, info = ArtifactCache(cache_dir).load("dmd_scaling", key, build, load, manifest)
    for p in layers.parameters():
        p.requires_grad_(False)
    return layers.eval(), info
