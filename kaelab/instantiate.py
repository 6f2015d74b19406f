"""Objects built from ``_target_`` configs (``hydra.utils.instantiate``), checked before any work.

``check_target(node, key)`` imports the node's ``_target_`` and binds its arguments to the
target's signature without calling it, so a misspelt class path, an unknown argument or a missing
one is a one-line ConfigError naming the config key, raised before anything is trained;
``instantiate(node, key)`` checks, then builds.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from hydra.utils import get_object
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from kaelab.errors import ConfigError

RESERVED = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def _as_dict(node: Any) -> dict[str, Any]:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    if isinstance(node, Mapping):
        return dict(node)
    raise ConfigError(f"expected a config with a _target_, got {type(node).__name__}")


def takes_argument(node: Any, name: str) -> bool:
    """Whether ``node._target_`` (importable, with a signature) takes an argument ``name``."""
    try:
        params = inspect.signature(get_object(_as_dict(node)["_target_"])).parameters
    except Exception:  # not importable or no signature: check_target reports it
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def named_entries(group: Any, key: str) -> list[tuple[str, Any]]:
    """The ``(name, node)`` pairs of a group of named ``_target_`` configs (``logger``,
    ``callbacks``), null entries (switched off) left out; a one-line ConfigError naming the key
    for anything else that is not a config."""
    if group is None:
        return []
    if not isinstance(group, (DictConfig, Mapping)):
        raise ConfigError(f"{key} must map names to _target_ configs, got {group!r}")
    entries = []
    for name, node in group.items():
        if node is None:
            continue
        if not isinstance(node, (DictConfig, Mapping)):
            raise ConfigError(
                f"{key}.{name}={node!r} must be a _target_ config (or null: off; ~{key}.{name} removes it)"
            )
        entries.append((str(name), node))
    return entries


def unset_arguments(node: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """The items of ``values`` that ``node._target_`` takes as a named parameter and ``node`` leaves
    unset (null or absent): what kaelab fills in, e.g. a stage's ``save_dir`` for a logger."""
    spec = _as_dict(node)
    try:
        params = inspect.signature(get_object(spec["_target_"])).parameters
    except Exception:  # not importable or no signature: check_target reports it
        return {}
    return {k: v for k, v in values.items() if k in params and spec.get(k) is None}


def check_target(node: Any, key: str, **extra: Any) -> Any:
    """The callable named by ``node._target_``, after checking that ``node``'s arguments (plus
    ``extra``, given at build time) fit its signature; one-line ConfigError naming ``key`` if not."""
    cfg = _as_dict(node)
    target = cfg.get("_target_")
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{key} needs a _target_ (the import path of the class or function to build)")
    try:
        obj = get_object(target)
    except Exception as err:  # ImportError, AttributeError, ... wrapped by Hydra
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{key}._target_={target!r} cannot be imported ({reason})") from None
    if not callable(obj):
        raise ConfigError(f"{key}._target_={target!r} is not a class or function")
    kwargs = {k: v for k, v in cfg.items() if k not in RESERVED}
    kwargs.update(extra)
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # a builtin without a signature: Hydra's call will tell
        return obj
    params = sig.parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        takes = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for name in kwargs:
            if name not in takes:
                raise ConfigError(f"{key}.{name}: {target} takes no argument {name!r} (it takes: {', '.join(takes)})")
    if not cfg.get("_partial_") and not cfg.get("_args_"):
        for name, p in params.items():
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in kwargs:
                raise ConfigError(f"{key}.{name} is missing: {target} needs it")
    try:
        (sig.bind_partial if cfg.get("_partial_") else sig.bind)(*cfg.get("_args_", []), **kwargs)
    except TypeError as err:
        raise ConfigError(f"{key} ({target}): {err}") from None
    return obj


def instantiate(node: Any, key: str, **extra: Any) -> Any:
    """``hydra.utils.instantiate(node, **extra)`` after ``check_target``; an error raised while
    building is a one-line ConfigError naming ``key``."""
    check_target(node, key, **extra)
    try:
        return hydra_instantiate(node, **extra)
    except ConfigError:
        raise
    except Exception as err:
        cause = err.__cause__ or err
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise ConfigError(f"{key}: building {_as_dict(node).get('_target_')} failed ({reason})") from None
