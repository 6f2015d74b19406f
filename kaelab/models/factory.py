"""A network from its ``model.net`` config: any ``_target_`` (kaelab's ResMLP and MLP are ordinary
configs, conf/model/*.yaml), built with ``hydra.utils.instantiate`` after an early signature check.

``net_identity`` is the form a network config takes in cache keys and checkpoint checks: kaelab's
built-in nets map back to the ``{arch: ...}`` dicts that kaelab wrote before networks were
``_target_`` configs, so that the cache keys of trained models (and old checkpoints, whose saved
hyperparameters use that form) stay valid; any other network is its config as written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from kaelab.errors import ConfigError
from kaelab.instantiate import check_target, instantiate

# built-in nets: _target_ <-> the arch name and fields of kaelab's former NetConfig
BUILTIN = {"kaelab.models.ResMLP": "resmlp", "kaelab.models.MLP": "mlp"}
ALIASES = {"kaelab.models.resmlp.ResMLP": "kaelab.models.ResMLP", "kaelab.models.mlp.MLP": "kaelab.models.MLP"}
LEGACY_FIELDS = ("arch", "in_dim", "out_dim", "width", "n_blocks", "hidden")


def from_legacy(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``{arch: resmlp|mlp, ...}`` (kaelab <= 0.2 configs and checkpoints) -> a ``_target_`` config."""
    arch = cfg.get("arch")
    targets = {v: k for k, v in BUILTIN.items()}
    if arch not in targets:
        raise ConfigError(f"model.net.arch must be 'resmlp' or 'mlp', got {arch!r} (or give model.net._target_)")
    needed = ("in_dim", "width", "n_blocks", "out_dim") if arch == "resmlp" else ("in_dim", "hidden", "out_dim")
    for key in needed:
        if cfg.get(key) is None or (key == "hidden" and not cfg.get(key)):
            raise ConfigError(f"model.net.arch={arch} needs model.net.{key}")
    return {"_target_": targets[arch], **{k: cfg[k] for k in needed}}


def net_identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The network config as cache keys and checkpoint checks see it (see the module docstring)."""
    cfg = dict(cfg)
    target = ALIASES.get(cfg.get("_target_"), cfg.get("_target_"))
    if target in BUILTIN:
        out: dict[str, Any] = dict.fromkeys(LEGACY_FIELDS)
        out.update({k: v for k, v in cfg.items() if k != "_target_"})
        out["arch"] = BUILTIN[target]
        return out
    if "_target_" not in cfg and "arch" in cfg:  # already the legacy form
        return {**dict.fromkeys(LEGACY_FIELDS), **cfg}
    return cfg


def check_net_config(cfg: Mapping[str, Any]) -> None:
    """One-line ConfigError for a ``model.net`` that cannot be built (before any work)."""
    cfg = dict(cfg)
    check_target(from_legacy(cfg) if "_target_" not in cfg else cfg, "model.net")


def build_net(cfg: Mapping[str, Any]) -> nn.Module:
    """The network of a ``model.net`` config (``_target_``, or the legacy ``arch`` form)."""
    cfg = dict(cfg)
    if "_target_" not in cfg:
        cfg = from_legacy(cfg)
    net = instantiate(cfg, "model.net")
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model.net._target_={cfg['_target_']!r} built a {type(net).__name__}, not a torch.nn.Module")
    return net
