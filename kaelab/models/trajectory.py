"""A network read as a trajectory through depth, the one view every stage takes of a network.

    x -> prefix -> s_0 -> stages[0] -> s_1 -> ... -> stages[T-1] -> s_T -> head -> logits

The states s_t are the neural representations of the KAE paper (Sec. 3.1: x_i, x_j are two of
them) and the time steps of the Koopman layers paper's trajectories (Sec. 3: s_{t+1} = f_t(s_t)).
Every state is a flat ``[B, D_t]`` tensor (a ``[B, tokens, dim]`` residual stream is flattened and
unflattened around each stage), so that the KAE, DMD, editing and topology need not know the
network's layout.

A network's trajectory is named by module paths, as torchvision's feature extraction names nodes:
``stages`` lists the modules whose outputs are the states, in order (``"blocks.*"`` expands to
the children of ``blocks``), ``head`` the module that maps the last state to the logits. The
network's forward must be that chain, ``head(m_T(...m_0(x)))``; ``Trajectory.of`` checks it on an
example batch. The names come from the config (``model.trajectory: {stages: [...], head: ...}``)
or from the network itself (a ``trajectory_spec()`` method returning the same dict; kaelab's
ResMLP and MLP have one), in that order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from kaelab.errors import ConfigError


def trajectory_spec(net: nn.Module, spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"stages": [module paths], "head": module path}`` from ``spec`` or ``net.trajectory_spec()``."""
    if spec is None and hasattr(net, "trajectory_spec"):
        spec = net.trajectory_spec()
    if not spec or not spec.get("stages") or not spec.get("head"):
        raise ConfigError(
            f"{type(net).__name__} does not say which modules form its trajectory: set model.trajectory.stages "
            "(module paths, e.g. [embed, 'blocks.*']) and model.trajectory.head, or give the network a "
            "trajectory_spec() method"
        )
    return {"stages": list(spec["stages"]), "head": str(spec["head"])}


def stage_names(net: nn.Module, spec: Mapping[str, Any] | None = None) -> list[str]:
    """The module paths of the states s_0 .. s_T (``"path.*"`` expanded to the children of path)."""
    modules = dict(net.named_modules())
    names: list[str] = []
    for entry in trajectory_spec(net, spec)["stages"]:
        entry = str(entry)
        base = entry[:-2] if entry.endswith(".*") else entry
        if base not in modules:
            raise ConfigError(f"model.trajectory.stages: {type(net).__name__} has no module {base!r}")
        if entry.endswith(".*"):
            children = [f"{base}.{n}" for n, _ in modules[base].named_children()]
            if not children:
                raise ConfigError(f"model.trajectory.stages: module {base!r} has no children to expand {entry!r}")
            names.extend(children)
        else:
            names.append(entry)
    if len(set(names)) != len(names):
        raise ConfigError(f"model.trajectory.stages names a module twice: {names}")
    return names


INSERTED = "scaling."  # name prefix of the states produced by layers that layer scaling inserted


class Flat(nn.Module):
    """``module`` applied to a flat state: unflatten to ``in_shape`` (None: as given), flatten the output."""

    def __init__(self, module: nn.Module, in_shape: Sequence[int] | None):
        super().__init__()
        self.module = module
        self.in_shape = None if in_shape is None else tuple(in_shape)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if self.in_shape is not None:
            s = s.reshape(s.shape[0], *self.in_shape)
        return self.module(s).flatten(1)


class Trajectory(nn.Module):
    """A network as the chain of Eq. 1 (KAE paper): prefix (input -> s_0), stages (s_t -> s_{t+1}),
    head (s_T -> logits), on flat states; built by ``kaelab.trajectory`` (``Trajectory.of``).

    ``names[t]`` names state t (the module path whose output it is), ``widths[t]`` its size,
    ``input_width`` the size of the flattened network input, ``shapes[t]`` state t's shape before
    flattening (e.g. ``(tokens, dim)``; None when not known, as for layers inserted by scaling).

    Examples:
        >>> import torch, kaelab as kl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> traj = kl.Trajectory.of(net, torch.randn(4, 2), {"stages": ["0", "1"], "head": "2"})
        >>> x = torch.randn(5, 2)
        >>> torch.allclose(traj.forward_from("0", traj.states(x)[0]), net(x))
        True
    """

    def __init__(
        self,
        prefix: nn.Module,
        stages: Sequence[nn.Module],
        head: nn.Module,
        names: Sequence[str],
        widths: Sequence[int],
        input_width: int,
        shapes: Sequence[tuple[int, ...]] | None = None,
    ):
        super().__init__()
        if not len(names) == len(widths) == len(stages) + 1:
            raise ValueError(f"{len(stages)} stages need {len(stages) + 1} state names and widths")
        self.prefix, self.stages, self.head = prefix, nn.ModuleList(stages), head
        self.names, self.widths, self.input_width = list(names), [int(w) for w in widths], int(input_width)
        self.shapes = None if shapes is None else [tuple(int(n) for n in sh) for sh in shapes]

    # ----------------------------------------------------------------------------- construction
    @classmethod
    @torch.no_grad()
    def of(cls, net: nn.Module, example: torch.Tensor, spec: Mapping[str, Any] | None = None) -> Trajectory:
        """The trajectory of ``net`` named by ``spec`` (or ``net.trajectory_spec()``), checked on
        ``example`` (a small input batch): the chain of stages and head must reproduce ``net(x)``."""
        names = stage_names(net, spec)
        head_name = trajectory_spec(net, spec)["head"]
        modules = dict(net.named_modules())
        if head_name not in modules:
            raise ConfigError(f"model.trajectory.head: {type(net).__name__} has no module {head_name!r}")
        was_training = net.training
        net.eval()
        try:
            shapes, s = [], example
            for name in names:
                try:
                    s = modules[name](s)
                except Exception as err:  # the chain does not compose: one line naming the stage
                    raise ConfigError(
                        f"model.trajectory: stage {name!r} cannot take the previous stage's output "
                        f"{tuple(s.shape)} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                        f"the network's forward must be head(stages[-1](...stages[0](x)))"
                    ) from None
                shapes.append(tuple(s.shape[1:]))
            chained, direct = modules[head_name](s), net(example)
        finally:
            net.train(was_training)
        if chained.shape != direct.shape or not torch.allclose(chained, direct, rtol=1e-4, atol=1e-5):
            raise ConfigError(
                f"model.trajectory: {head_name}({' -> '.join(names)}) does not reproduce {type(net).__name__}'s "
                "forward; list every module of the chain from input to head"
            )
        prefix = Flat(modules[names[0]], tuple(example.shape[1:]))  # takes flat or shaped inputs
        stages = [Flat(modules[n], shape) for n, shape in zip(names[1:], shapes[:-1], strict=True)]
        traj = cls(
            prefix,
            stages,
            Flat(modules[head_name], shapes[-1]),
            names,
            [math.prod(sh) for sh in shapes],
            math.prod(example.shape[1:]),
            shapes,
        )
        return traj.train(was_training)  # shares the net's modules: one mode for both

    def scaled(self, t: int, new_layers: Sequence[nn.Module]) -> Trajectory:
        """The Koopman layers paper's layer scaling at state t: the module producing s_t gets
        ``new_layers`` in front of it (``s_{t-1}`` -> new layers -> that module -> ``s_t``, n + 2
        states; the states before t go into the prefix, those after into the head)."""
        before, module, after = self.split(t)
        in_width = self.in_width(t)
        first = self.names[t - 1] if t > 0 else "input"
        names = [first] + [f"{INSERTED}{i}" for i in range(len(new_layers))] + [self.names[t]]
        widths = [in_width] + [_out_features(m) for m in new_layers] + [self.widths[t]]
        return Trajectory(before, [*new_layers, module], after, names, widths, self.input_width)

    def in_width(self, t: int) -> int:
        """Size of the input of the module producing s_t (s_{t-1}, or the network input for t = 0)."""
        return self.widths[t - 1] if t > 0 else self.input_width

    def split(self, t: int) -> tuple[nn.Module, nn.Module, nn.Module]:
        """(input -> the input of the module producing s_t, that module, s_t -> logits), all flat."""
        if not 0 <= t < self.n_states:
            raise IndexError(t)
        if t == 0:
            before: nn.Module = nn.Flatten(1)
            module = self.prefix
        else:
            before = nn.Sequential(self.prefix, *self.stages[: t - 1])
            module = self.stages[t - 1]
        return before, module, nn.Sequential(*self.stages[t:], self.head)

    # ---------------------------------------------------------------------------------- running
    @property
    def n_states(self) -> int:
        return len(self.names)

    @property
    def state_dim(self) -> int:
        return max(self.widths)

    def index(self, state: int | str) -> int:
        """A state given by index (negative from the end) or name -> its index."""
        if isinstance(state, str) and not state.lstrip("-").isdigit():
            if state not in self.names:
                raise KeyError(f"{state!r} is not one of {self.names}")
            return self.names.index(state)
        idx = int(state)
        if not -self.n_states <= idx < self.n_states:
            raise IndexError(f"state {idx} is out of range for {self.n_states} states")
        return idx % self.n_states

    def is_original(self, t: int) -> bool:
        """Whether state t is produced by one of the network's own modules (not an inserted layer)."""
        return not self.names[t].startswith(INSERTED)

    def states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All T + 1 states of a batch (each ``[B, widths[t]]``)."""
        s = self.prefix(x)
        out = [s]
        for stage in self.stages:
            s = stage(s)
            out.append(s)
        return out

    def run(self, s: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Apply stages ``start .. stop-1``: maps s_start to s_stop."""
        for t in range(start, stop):
            s = self.stages[t](s)
        return s

    def forward_from(self, state: int | str, s: torch.Tensor) -> torch.Tensor:
        """Logits from state ``state`` (index or name) given as ``s``: the rest of the network."""
        return self.head(self.run(s, self.index(state), len(self.stages)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.run(self.prefix(x), 0, len(self.stages)))


def _out_features(module: nn.Module) -> int:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("a scaling layer must contain a Linear")
    return linears[-1].out_features


def trajectory(
    net: nn.Module, example: torch.Tensor, stages: Sequence[str] | None = None, head: str | None = None
) -> Trajectory:
    """Any ``nn.Module`` read as a trajectory through depth (KAE paper, Eq. 1: N(x) = f_L o ... o f_1(x_0)).

    ``stages`` names the modules whose outputs are the states x_1..x_L, in order (``"blocks.*"``:
    the children of ``blocks``), ``head`` the module mapping the last state to the logits; both
    default to ``net.trajectory_spec()``. ``example`` is a small input batch on which the chain is
    checked to reproduce ``net(example)``. The trajectory shares ``net``'s modules (no copy).

    Examples:
        >>> import torch, kaelab as kl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> traj = kl.trajectory(net, torch.randn(4, 2), stages=["0", "1"], head="2")
        >>> traj.names, traj.widths
        (['0', '1'], [8, 8])
    """
    spec = None if stages is None and head is None else {"stages": list(stages or []), "head": head}
    return Trajectory.of(net, example, spec)
