"""The hybrid network: true layers, then the DMD operator over the replaced span, then true layers.

For a span ``[a, b]`` of a Trajectory (kaelab/models/trajectory.py) and ``h`` delays (Koopman layers paper, Sec. 3):

1. the true network computes ``s_0 .. s_a`` and the seed window ``s_a .. s_{a+h}`` (h + 1 states);
2. the operator predicts ``s_{a+h+1} .. s_b`` from the delay vector of the seed window, so it
   carries ``b - a - h`` transitions ("layers replaced"); for inference the steps are composed once
   into one matrix (``DelayOperator.propagator``), ``predicted_states`` steps them one by one;
3. the predicted ``s_b`` (its first ``width_b`` coordinates) goes through the true stages
   ``b .. T-1`` and the head.

Position-wise (``positions=(tokens, dim)``, a sequence model read with ``model.positions``): the
states are ``[B, tokens, dim]`` streams and the operator, fitted on single positions' states,
acts on each position's row alone, so the replaced blocks (attention included) become one linear
map per position, while the true blocks before and after the span still attend across positions.
The hybrid's output is then ``[B, tokens, classes]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kaelab.dmd.config import DMDConfig
from kaelab.dmd.delay import check_delay
from kaelab.dmd.operator import DelayOperator
from kaelab.dmd.rollout import build_rollout
from kaelab.errors import ConfigError
from kaelab.models.trajectory import Trajectory


def resolve_span(span, n_states: int) -> tuple[int, int]:
    """``[a, b]`` state indices (negative from the end; None = whole trajectory), validated."""
    if span is None:
        return 0, n_states - 1
    if len(span) != 2:
        raise ConfigError(f"dmd.span must be [first_state, last_state], got {list(span)}")
    a, b = (int(i) + n_states if int(i) < 0 else int(i) for i in span)
    if not 0 <= a < b < n_states:
        raise ConfigError(
            f"dmd.span={list(span)} is not a span of this trajectory's {n_states} states (0..{n_states - 1})"
        )
    return a, b


class HybridNet(nn.Module):
    """``traj`` with the states of ``span`` after its seed window predicted by ``operator``, stepped by
    ``rollout`` (a built-in name, a ``_target_`` config or a built rollout: kaelab/dmd/rollout.py):
    the Koopman layers paper's hybrid network (Method Summary). ``DMDReplacement`` builds one.
    ``positions``: ``(tokens, dim)`` of a sequence model's states, for an operator fitted on single
    positions' states and applied to every position alone (see the module's docstring).

    Examples:
        >>> import torch, kaelab as kl
        >>> nn = torch.nn
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 4), nn.Linear(4, 3))
        >>> traj = kl.trajectory(net, torch.randn(4, 2), stages=["0", "1", "2"], head="3")
        >>> S = torch.stack(traj.states(torch.randn(200, 2)), dim=1).detach()  # [n, 3 states, 4]
        >>> hybrid = kl.HybridNet(traj, kl.fit_delay_dmd(S, h=0, rank=-1).operator, span=(0, 2))
        >>> hybrid(torch.randn(5, 2)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        traj: Trajectory,
        operator: DelayOperator,
        span: tuple[int, int],
        rollout: Any = DMDConfig.rollout,
        positions: tuple[int, int] | None = None,
    ):
        super().__init__()
        a, b = span
        check_delay(operator.h, b - a + 1)
        width = max(traj.widths[a : b + 1]) if positions is None else positions[1]
        if operator.state_dim != width:
            raise ValueError(
                f"operator state width {operator.state_dim} does not match the span's widest state {width}"
            )
        self.traj, self.operator, self.positions = traj, operator, positions
        self.a, self.b, self.h, self.rollout = a, b, operator.h, build_rollout(rollout)
        # z_{a+h} -> s_b over the whole replaced span, built once (DelayOperator.propagator)
        self.register_buffer("P", operator.propagator(self.layers_replaced, self.rollout))

    @property
    def layers_replaced(self) -> int:
        """Transitions the operator carries (s_{a+h} -> ... -> s_b), inserted scaling layers included."""
        return self.b - self.a - self.h

    @property
    def original_layers_replaced(self) -> int:
        """Of those, the transitions computed by the network's own modules (for a scaled plain MLP:
        at most the one scaled layer; for a residual net: every replaced block)."""
        return sum(self.traj.is_original(t) for t in range(self.a + self.h + 1, self.b + 1))

    def seed_window(self, x: torch.Tensor) -> torch.Tensor:
        """Delay vector of the true states ``s_a .. s_{a+h}``, each zero-padded, oldest first
        (position-wise: one row per position of each window, ``[B * tokens, (h+1) dim]``)."""
        s = self.traj.run(self.traj.prefix(x), 0, self.a)
        d = self.operator.state_dim
        window = []
        for t in range(self.a, self.a + self.h + 1):
            if t > self.a:
                s = self.traj.stages[t - 1](s)
            rows = s if self.positions is None else s.reshape(-1, d)
            window.append(nn.functional.pad(rows, (0, d - rows.shape[-1])))
        return torch.cat(window, dim=1)

    def predicted_state(self, x: torch.Tensor) -> torch.Tensor:
        """The operator's ``s_b`` as the network's flat state ``[B, width_b]``."""
        z = self.seed_window(x)
        s_b = (z.to(self.P.dtype) @ self.P).to(z.dtype)  # the states' dtype (the inputs may be token ids)
        if self.positions is not None:
            return s_b.reshape(len(x), -1)
        return s_b[:, : self.traj.widths[self.b]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.traj.head(self.traj.run(self.predicted_state(x), self.b, len(self.traj.stages)))
        return logits if self.positions is None else logits.reshape(len(x), self.positions[0], -1)

    def predicted_states(self, x: torch.Tensor) -> torch.Tensor:
        """The operator's ``s_{a+h+1} .. s_b``, ``[B, b - a - h, D]`` (for error diagnostics;
        position-wise ``[B * tokens, b - a - h, dim]``)."""
        return self.operator.rollout(self.seed_window(x), self.layers_replaced, self.rollout, all_states=True)
