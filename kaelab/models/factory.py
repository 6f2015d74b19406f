"""A network from its ``model.net`` config: any ``_target_`` (kaelab's ResMLP and MLP are ordinary
configs, conf/model/*.yaml), built with ``hydra.utils.instantiate`` after an early signature check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from kaelab.errors import ConfigError
from kaelab.instantiate import check_target, instantiate


def check_net_config(cfg: Mapping[str, Any]) -> None:
    """One-line ConfigError for a ``model.net`` that cannot be built (no ``_target_``, a target that
    cannot be imported, arguments its signature does not take), before any work."""
    check_target(dict(cfg), "model.net")


def build_net(cfg: Mapping[str, Any]) -> nn.Module:
    """The network of a ``model.net`` ``_target_`` config."""
    net = instantiate(dict(cfg), "model.net")
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model.net._target_={cfg['_target_']!r} built a {type(net).__name__}, not a torch.nn.Module")
    return net
