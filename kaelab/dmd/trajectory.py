"""A classifier read as a discrete-time system through depth (Koopman layers paper, Sec. 3).

``DepthTrajectory`` splits a network into ``prefix`` (input -> s_0), ``stages`` (s_t -> s_{t+1},
t = 0 .. T-1) and ``head`` (s_T -> logits), so that ``head(stages(prefix(x))) == net(x)``:

* residual MLP (``ResMLP``): s_0 = output of the input layer, s_t = output of block t (the
  network already is a trajectory through depth; KAE paper's x_i ... x_j);
* plain MLP after layer scaling (kaelab/dmd/layer_scaling.py): s_0 = input of the scaled layer,
  s_1 .. s_n = outputs of the n new layers, s_{n+1} = output of the frozen original layer;
* plain MLP without scaling: s_t = output of hidden layer t.

States of different widths are zero-padded to the widest one (kaelab/dmd/delay.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kaelab.models import MLP, ResMLP


class DepthTrajectory(nn.Module):
    def __init__(self, prefix: nn.Module, stages: Sequence[nn.Module], head: nn.Module, widths: Sequence[int]):
        super().__init__()
        if len(widths) != len(stages) + 1:
            raise ValueError(f"{len(stages)} stages need {len(stages) + 1} state widths, got {len(widths)}")
        self.prefix, self.stages, self.head = prefix, nn.ModuleList(stages), head
        self.widths = list(widths)

    @property
    def n_states(self) -> int:
        return len(self.widths)

    @property
    def state_dim(self) -> int:
        return max(self.widths)

    def states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All T + 1 states of a batch (each ``[B, width_t]``)."""
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.run(self.prefix(x), 0, len(self.stages)))


def resmlp_trajectory(net: ResMLP) -> DepthTrajectory:
    width = net.head.in_features
    return DepthTrajectory(net.input_layer, list(net.blocks), net.head, [width] * (len(net.blocks) + 1))


def mlp_trajectory(net: MLP) -> DepthTrajectory:
    """Hidden layers of a plain MLP as states: s_0 = input, s_t = output of ``layers[t-1]``."""
    widths = [net.layers[0][0].in_features] + [layer[0].out_features for layer in net.layers]
    return DepthTrajectory(nn.Identity(), list(net.layers), net.head, widths)


def scaled_mlp_trajectory(net: MLP, layer: int, new_layers: Sequence[nn.Module]) -> DepthTrajectory:
    """Trajectory of the scaled MLP: ``layers[:layer]`` -> new layers -> ``layers[layer]`` -> rest."""
    target = net.layers[layer]
    width_in, width_out = target[0].in_features, target[0].out_features
    if new_layers and new_layers[-1][0].out_features != width_in:
        raise ValueError("the last new layer must output the scaled layer's input width")
    prefix = nn.Sequential(*net.layers[:layer]) if layer else nn.Identity()
    head = nn.Sequential(*net.layers[layer + 1 :], net.head)
    widths = [width_in] + [layer[0].out_features for layer in new_layers] + [width_out]
    return DepthTrajectory(prefix, [*new_layers, target], head, widths)
