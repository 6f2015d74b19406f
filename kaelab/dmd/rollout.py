"""Rollouts: how a fitted ``DelayOperator`` continues a delay vector over the replaced span.

A rollout is any callable ``rollout(operator, z, steps, all_states=False)`` that predicts the
``steps`` states after the delay vectors ``z`` ([B, (h+1)D]) and returns the newest one ``[B, D]``,
or with ``all_states`` every predicted state ``[B, steps, D]``. It must be linear in ``z``: the
hybrid network rolls out the identity once and applies the resulting matrix
(``DelayOperator.propagator``).

``dmd.rollout`` selects one: a built-in name (``reduced``, ``shift``: shorthands for the
``_target_`` paths in ``ROLLOUTS``) or a ``_target_`` config of the user's own class (or function,
with ``_partial_: true``), built with ``hydra.utils.instantiate`` (``kaelab.instantiate``), e.g.
``dmd.rollout={_target_: mypkg.MyRollout, factor: 0.5}``.

The built-ins (Koopman layers paper, Sec. 3, with the projected operator ``A = U A~ U^T``):

* ``ReducedRollout``: ``y = U^T z``, then ``y <- A~ y`` once per step, reading the newest block
  ``U_last y`` (one ``[B, r] @ [r, r]`` matmul per step);
* ``ShiftRollout``: the delay window is shifted exactly and only its newest state is predicted,
  ``s_{t+1} = M z_t`` with ``M = U_last A~ U^T``.

With the full numerical rank both give the same predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from kaelab.errors import ConfigError

if TYPE_CHECKING:
    from kaelab.dmd.operator import DelayOperator

# built-in rollout names -> their _target_ (the one place a name is resolved)
ROLLOUTS = {
    "reduced": "kaelab.dmd.rollout.ReducedRollout",
    "shift": "kaelab.dmd.rollout.ShiftRollout",
}


class ReducedRollout:
    """Iterate the ``r x r`` reduced operator ``A~`` on ``y = U^T z``; read ``U_last y``."""

    def __call__(self, op: DelayOperator, z: torch.Tensor, steps: int, all_states: bool = False) -> torch.Tensor:
        y, At, read = z @ op.U, op.Atilde.T, op.U[-op.state_dim :].T
        out = []
        for _ in range(steps):
            y = y @ At
            if all_states:
                out.append(y @ read)
        return torch.stack(out, dim=1) if all_states else y @ read


class ShiftRollout:
    """Shift the delay window exactly and predict only its newest state, ``s_{t+1} = M z_t``."""

    def __call__(self, op: DelayOperator, z: torch.Tensor, steps: int, all_states: bool = False) -> torch.Tensor:
        Mt, d, out = op.M.T, op.state_dim, []
        for _ in range(steps):
            s = z @ Mt
            z = torch.cat([z[:, d:], s], dim=1) if op.h else s
            out.append(s)
        return torch.stack(out, dim=1) if all_states else out[-1]


def rollout_node(spec: Any) -> dict[str, Any]:
    """``dmd.rollout`` as a ``_target_`` config: a built-in name's entry of ``ROLLOUTS``, or the
    user's ``_target_`` mapping as given."""
    if isinstance(spec, str):
        if spec not in ROLLOUTS:
            raise ConfigError(
                f"dmd.rollout must be one of {tuple(ROLLOUTS)} or a {{_target_: ...}} config, got {spec!r}"
            )
        return {"_target_": ROLLOUTS[spec]}
    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, Mapping) and "_target_" in spec:
        return dict(spec)
    raise ConfigError(f"dmd.rollout must be one of {tuple(ROLLOUTS)} or a {{_target_: ...}} config, got {spec!r}")


def rollout_name(spec: Any) -> str:
    """What ``dmd/rollout`` reports: the built-in name, or the ``_target_`` (or type) of the user's."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, (Mapping, DictConfig)):
        return str(spec.get("_target_"))
    return type(spec).__qualname__


def build_rollout(spec: Any) -> Callable[..., torch.Tensor]:
    """The rollout named or configured by ``spec``; an already built rollout (a callable that is
    not a config) is returned as it is."""
    if callable(spec) and not isinstance(spec, (str, Mapping, DictConfig)):
        return spec
    from kaelab.instantiate import instantiate

    return instantiate(rollout_node(spec), "dmd.rollout")
