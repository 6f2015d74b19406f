"""Time-delay (Hankel) coordinates of trajectories through depth (Koopman layers paper, Sec. 3).

A trajectory batch is a tensor ``S`` of shape ``[N, T + 1, D]``: N samples, T + 1 states of a common
width D. The delay embedding with ``h`` delays stacks ``h + 1`` consecutive states,

    z_t = [s_{t-h}, ..., s_{t-1}, s_t]  (oldest first),   t = h .. T,

so a sample yields ``T + 1 - h`` delay vectors of size ``(h + 1) D``. The DMD is fitted on paired
snapshots ``z_t -> z_{t+1}`` formed *within* each sample, then flattened: no pair ever joins the
last state of one sample to the first state of the next (what concatenating all trajectories into
one long time series, as the authors' code does, would do).

Why hand-written rather than ``pydmd.HankelDMD``: HankelDMD embeds one single time series, so it
would create exactly those cross-sample pairs; ``torch.Tensor.unfold`` builds all windows of all
samples in one op instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kaelab.errors import ConfigError


def pad_states(states: Sequence[torch.Tensor], dim: int | None = None) -> torch.Tensor:
    """Stack states of possibly different widths into ``[N, T + 1, D]``, zero-padding each to D.

    Zero padding (rather than the authors' constant -5) keeps the padded coordinates identically
    zero, so they add no direction to the snapshot SVD and the fitted operator is the same as on the
    unpadded coordinates; a narrower state is read back as the first ``width`` coordinates.
    """
    dim = dim or max(s.shape[-1] for s in states)
    out = states[0].new_zeros(states[0].shape[0], len(states), dim)
    for t, s in enumerate(states):
        out[:, t, : s.shape[-1]] = s
    return out


def check_delay(h: int, n_states: int) -> None:
    """One-line ConfigError unless a span of ``n_states`` states has a delay pair for ``h`` delays."""
    if h < 0:
        raise ConfigError(f"dmd.h must be >= 0, got {h}")
    if h + 2 > n_states:
        raise ConfigError(
            f"dmd.h={h} is too long for a trajectory of {n_states} states: the delay window needs "
            f"h+1={h + 1} seed states plus at least one state to predict (use dmd.h <= {n_states - 2})"
        )


def delay_embed(S: torch.Tensor, h: int) -> torch.Tensor:
    """Delay vectors ``[N, T + 1 - h, (h + 1) D]`` of trajectories ``S = [N, T + 1, D]``: the
    time-delay (Hankel) coordinates on which the Koopman layers paper fits its DMD (Method Summary).

    Examples:
        >>> import torch, kaelab as kl
        >>> S = torch.arange(6.0).reshape(1, 3, 2)  # one trajectory of 3 states in 2-d
        >>> kl.delay_embed(S, h=1).tolist()
        [[[0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 5.0]]]
    """
    if S.ndim != 3:
        raise ValueError(f"expected trajectories [N, T+1, D], got shape {tuple(S.shape)}")
    n, steps, d = S.shape
    if h < 0 or h + 1 > steps:
        raise ConfigError(f"dmd.h={h} needs at least h+1={h + 1} states, the trajectory has {steps}")
    # unfold -> [N, T+1-h, D, h+1]; move the window axis before the state axis (oldest first)
    windows = S.unfold(1, h + 1, 1).transpose(2, 3)
    return windows.reshape(n, steps - h, (h + 1) * d)


def paired_snapshots(S: torch.Tensor, h: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample pairs ``(X, Y)``, each ``[N (T - h), (h + 1) D]`` with ``Y[i] = z_{t+1}`` of ``X[i] = z_t``."""
    check_delay(h, S.shape[1])
    Z = delay_embed(S, h)
    d = Z.shape[-1]
    return Z[:, :-1].reshape(-1, d), Z[:, 1:].reshape(-1, d)
