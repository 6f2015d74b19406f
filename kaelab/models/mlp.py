"""Plain Linear+ReLU MLP (the DMD paper's networks) and the config -> network factory."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from kaelab.errors import ConfigError
from kaelab.models.layered import LayeredNet
from kaelab.models.resmlp import ResMLP


class MLP(LayeredNet):
    """``in_dim -> hidden[0] -> ... -> hidden[-1] -> out_dim``, ReLU after every hidden Linear.

    ``layers.{t}`` is Linear+ReLU number t, so the hidden states are the outputs of ``layers.*``.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int):
        super().__init__()
        dims = [in_dim, *hidden]
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.head = nn.Linear(dims[-1], out_dim)

    def representation_names(self) -> list[str]:
        return [f"layers.{i}" for i in range(len(self.layers))]

    def stages(self) -> list[nn.Module]:
        return list(self.layers)


def build_net(cfg) -> nn.Module:
    """Network from a ``model.net`` config: ``arch`` resmlp (width, n_blocks) or mlp (hidden)."""
    arch = cfg["arch"]
    if arch == "resmlp":
        missing = [k for k in ("width", "n_blocks") if cfg.get(k) is None]
        if missing:
            raise ConfigError(f"model.net.arch=resmlp needs model.net.{missing[0]}")
        return ResMLP(cfg["in_dim"], cfg["width"], cfg["n_blocks"], cfg["out_dim"])
    if arch == "mlp":
        if not cfg.get("hidden"):
            raise ConfigError("model.net.arch=mlp needs a non-empty model.net.hidden list")
        return MLP(cfg["in_dim"], list(cfg["hidden"]), cfg["out_dim"])
    raise ConfigError(f"model.net.arch must be 'resmlp' or 'mlp', got {arch!r}")
