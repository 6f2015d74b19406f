"""A network read as a trajectory through depth: x -> stage_0 -> state_0 -> stage_1 -> ... -> head.

The states (outputs of the stages) are the neural representations of the KAE paper (Sec. 3.1) and
the time steps of the DMD paper's trajectories.
"""

from __future__ import annotations

import torch
from torch import nn


class LayeredNet(nn.Module):
    head: nn.Module

    def stages(self) -> list[nn.Module]:
        """The maps between consecutive states: state_t = stages()[t](state_{t-1})."""
        raise NotImplementedError

    def representation_names(self) -> list[str]:
        """Module names of the stages, in order (their outputs are the representations)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages():
            x = stage(x)
        return self.head(x)

    def forward_from(self, name: str, h: torch.Tensor) -> torch.Tensor:
        """Logits from the representation ``h`` output by module ``name`` (the rest of the net)."""
        names = self.representation_names()
        if name not in names:
            raise KeyError(f"{name!r} is not one of {names}")
        for stage in self.stages()[names.index(name) + 1 :]:
            h = stage(h)
        return self.head(h)
