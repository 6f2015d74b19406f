"""Token positions as samples: a sequence model's trajectory read one position at a time.

A sequence model (a language model; any network whose trajectory states are ``[B, T, d]``:
windows of T tokens, a d-dimensional residual stream) has one prediction per position: the
logits at position t predict target t (for a language model, the token after t). With
``model.positions: {per_window: P, seed: S}`` every stage takes its samples at token positions
instead of whole inputs:

* ``draw_positions``: P positions per window, drawn uniformly among the positions that have a
  target (``IGNORE_INDEX`` marks those that do not), by one ``torch.Generator`` seeded with S, so
  every stage and every run with the same seed reads the same positions;
* a sample's state at layer t is the row ``s_t[window, position]`` ``[d]`` (the KAE's x_i and x_j,
  topology's point clouds, DMD's snapshots), its label the target at that position;
* ``PositionView``: the rest of the network from such a state, which exists only from the last
  state (the head is applied position by position, checked); the blocks before it attend across
  positions, so a single position's state has no forward pass of its own through them.

The same views serve DMD layer replacement position by position inside the whole network
(kaelab/dmd/hybrid.py: the operator acts on every position's row, later blocks still attend).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from kaelab.errors import ConfigError

IGNORE_INDEX = -100  # a target that is never a sample's label (padding, a left-out target)
POSITIONS_PER_BATCH = 1 << 16  # window batches of about this many positions (memory: positions x d per state)


def positions_spec(node: Any) -> dict[str, int] | None:
    """``model.positions`` as ``{"per_window": P, "seed": S}`` (None: not a sequence model)."""
    if node is None:
        return None
    spec = dict(node) if isinstance(node, Mapping) else {"per_window": node.per_window, "seed": node.seed}
    per_window, seed = spec.get("per_window"), spec.get("seed", 0)
    if isinstance(per_window, bool) or not isinstance(per_window, int) or per_window < 1:
        raise ConfigError(f"model.positions.per_window={per_window} must be an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"model.positions.seed={seed} must be an integer")
    return {"per_window": per_window, "seed": seed}


def draw_positions(targets: torch.Tensor, per_window: int, seed: int) -> torch.Tensor:
    """``[n, 2]`` (window, position) rows: for each window (row of ``targets`` ``[N, T]``) up to
    ``per_window`` distinct positions drawn uniformly among those whose target is not
    ``IGNORE_INDEX`` (a window with fewer gives all of them), sorted by window, then position:
    the samples whose states are a sequence model's representations (KAE paper, Sec. 3.1).

    One ``torch.Generator`` seeded with ``seed`` draws a score per (window, position) row by row,
    so the first n windows of a split get the same positions as in the whole split.

    Examples:
        >>> import torch, kaelab as kl
        >>> y = torch.tensor([[5, 6, -100, 7], [-100, -100, -100, 1]])
        >>> where = kl.draw_positions(y, 2, seed=0)
        >>> where[:, 0].tolist(), bool((y[where[:, 0], where[:, 1]] != -100).all())
        ([0, 0, 1], True)
    """
    if targets.dim() != 2:
        raise ConfigError(
            f"model.positions: the data's targets have shape {tuple(targets.shape)}, not [windows, tokens] "
            "(one target per position)"
        )
    n, tokens = targets.shape
    scores = torch.rand(n, tokens, generator=torch.Generator().manual_seed(int(seed)))
    valid = targets != IGNORE_INDEX
    scores = torch.where(valid, scores, torch.full_like(scores, 2.0))  # an ignored position is drawn last
    k = min(int(per_window), tokens)
    idx = scores.topk(k, dim=1, largest=False).indices.sort(dim=1).values
    window = torch.arange(n).unsqueeze(1).expand(n, k)
    keep = valid.gather(1, idx)
    return torch.stack([window[keep], idx[keep]], dim=1)


def sequence_layout(traj: nn.Module) -> tuple[int, int]:
    """(tokens T, width d) shared by every state of a Trajectory whose states are ``[T, d]``;
    a one-line ConfigError when it has other states (positions need a ``[B, T, d]`` stream)."""
    shapes = getattr(traj, "shapes", None)
    if not shapes:
        raise ConfigError(
            "model.positions: the trajectory does not record its states' shapes (build it with Trajectory.of)"
        )
    first = shapes[0]
    for name, shape in zip(traj.names, shapes, strict=True):
        if len(shape) != 2 or shape != first:
            raise ConfigError(
                f"model.positions is set, but state {name!r} has shape {list(shape)}, not [tokens, dim] = "
                f"{list(first)} like the first state: positions as samples need a network whose states are "
                "[B, tokens, dim]"
            )
    return first[0], first[1]


def flatten_tokens(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position logits ``[B, T, V]`` and targets ``[B, T]`` -> ``[M, V]``, ``[M]`` over the M
    positions whose target is not ``IGNORE_INDEX``; ``[B, V]`` and ``[B]`` pass through."""
    if logits.dim() == 2:
        return logits, targets
    logits, targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    keep = targets != IGNORE_INDEX
    return logits[keep], targets[keep]


def bits_per_token(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean cross-entropy of ``logits`` against ``targets`` in bits (nats / ln 2; positions whose
    target is ``IGNORE_INDEX`` left out): bits per byte for a byte-level language model."""
    logits, targets = flatten_tokens(logits, targets)
    ce = nn.functional.cross_entropy(logits.double(), targets, reduction="mean")
    return ce.item() / math.log(2)


def window_batches(where: torch.Tensor, tokens: int):
    """(windows, rows) per batch of about ``POSITIONS_PER_BATCH`` positions: the distinct windows of
    ``where`` in a batch, and for each of its rows the index of its window among them."""
    windows, inverse = torch.unique(where[:, 0], return_inverse=True)
    per_batch = max(1, POSITIONS_PER_BATCH // max(tokens, 1))
    for start in range(0, len(windows), per_batch):
        rows = torch.nonzero((inverse >= start) & (inverse < start + per_batch)).flatten()
        yield windows[start : start + per_batch], rows, inverse[rows] - start


@torch.no_grad()
def states_at(traj: nn.Module, x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Every state of a sequence Trajectory at the (window, position) rows ``where`` of inputs
    ``x``: ``[n, n_states, d]`` (per-position trajectories through depth, e.g. DMD's snapshots)."""
    tokens, dim = sequence_layout(traj)
    out = torch.empty(len(where), len(traj.names), dim)
    for windows, rows, local in window_batches(where, tokens):
        states = traj.states(x[windows])
        picked = [s.reshape(len(windows), tokens, dim)[local, where[rows, 1]] for s in states]
        out = out.to(picked[0].dtype)
        out[rows] = torch.stack(picked, dim=1)
    return out


class PositionView(nn.Module):
    """A sequence Trajectory (kaelab/models/trajectory.py) read at single token positions: what
    scores a surrogate's per-position x_j through the rest of the network (KAE paper, Sec. 4).

    ``forward(x)``: the network's logits ``[B, T, V]``; ``at(x, where)``: its logits ``[n, V]`` at
    the (window, position) rows ``where``; ``forward_from(state, s)``: logits ``[n, V]`` from
    per-position states ``s`` ``[n, d]`` of the LAST state, through the head applied to each
    position alone (``of`` checks that the head is position-wise). From an earlier state the rest
    of the network would be blocks that attend across positions: a lone position's state has no
    such forward pass, so that is a ConfigError.

    Examples:
        >>> import torch, kaelab as kl
        >>> net = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 5))
        >>> x = torch.randint(0, 5, (3, 6))
        >>> view = kl.PositionView.of(kl.trajectory(net, x[:2], stages=["0", "1"], head="2"), x[:2])
        >>> where = torch.tensor([[0, 1], [2, 5]])
        >>> torch.allclose(view.at(x, where), net(x)[where[:, 0], where[:, 1]])
        True
    """

    def __init__(self, traj: nn.Module):
        super().__init__()
        self.tokens, self.dim = sequence_layout(traj)
        self.traj = traj
        self.names = list(traj.names)
        self.head_module = getattr(traj.head, "module", traj.head)  # the network's own head, unflattened

    @classmethod
    @torch.no_grad()
    def of(cls, traj: nn.Module, example: torch.Tensor) -> PositionView:
        """The view of ``traj``, its head checked on ``example`` (two windows) to be position-wise:
        one logit vector per position, each computed from that position's state alone."""
        view = cls(traj)
        was_training = traj.training
        traj.eval()
        try:
            s = traj.states(example)[-1].reshape(len(example), view.tokens, view.dim)
            full = view.head_module(s)
            alone = view.head_module(s.reshape(-1, 1, view.dim))
        finally:
            traj.train(was_training)
        head = traj.names[-1]
        if full.dim() != 3 or full.shape[:2] != s.shape[:2]:
            raise ConfigError(
                f"model.positions: the head after {head!r} gives shape {list(full.shape[1:])} per window, not one "
                "logit vector per position ([tokens, classes])"
            )
        same = alone.numel() == full.numel() and torch.allclose(alone.reshape(full.shape), full, rtol=1e-4, atol=1e-5)
        if not same:
            raise ConfigError(
                "model.positions: the head mixes positions (its logits at a position depend on other positions); "
                "per-position states need a position-wise head"
            )
        return view

    @property
    def n_states(self) -> int:
        return len(self.names)

    def index(self, state: int | str) -> int:
        return self.traj.index(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.traj(x).reshape(len(x), self.tokens, -1)

    def forward_from(self, state: int | str, s: torch.Tensor) -> torch.Tensor:
        """Logits ``[n, V]`` from per-position states ``s`` ``[n, d]`` of the last state (the head,
        position by position)."""
        t = self.index(state)
        if t != self.n_states - 1:
            raise ConfigError(
                f"the rest of the network from {self.names[t]!r} attends across positions: a single position's "
                f"state has no forward pass of its own; only the last state ({self.names[-1]}) reaches the head alone"
            )
        return self.head_module(s.reshape(-1, 1, self.dim)).reshape(len(s), -1)

    @torch.no_grad()
    def at(self, x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """The network's logits ``[n, V]`` at the (window, position) rows ``where`` of inputs ``x``."""
        out: torch.Tensor | None = None
        for windows, rows, local in window_batches(where, self.tokens):
            logits = self(x[windows])
            if out is None:
                out = logits.new_empty(len(where), logits.shape[-1])
            out[rows] = logits[local, where[rows, 1]]
        return out if out is not None else torch.empty(0, 0)


def sample_logits(net: nn.Module, inputs: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
    """A network's logits at its samples: ``net(inputs)``, or at the (window, position) rows
    ``where`` when the samples are token positions (``net``: a ``PositionView``)."""
    if where is None:
        return net(inputs)
    if not isinstance(net, PositionView):
        raise TypeError("samples at token positions need a PositionView of the network")
    return net.at(inputs, where)


def positions_metrics(spec: Mapping[str, int] | None, where: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``positions/*``: the draw's settings and the position samples per split (empty without positions)."""
    if spec is None:
        return {}
    m: dict[str, Any] = {"positions/per_window": spec["per_window"], "positions/seed": spec["seed"]}
    for split, w in where.items():
        m[f"positions/n_{split}"] = len(w)
        m[f"positions/windows_{split}"] = int(torch.unique(w[:, 0]).numel()) if len(w) else 0
    return m
