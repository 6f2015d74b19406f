"""Config schema of the edit stage (``edit`` group; conf/edit/*.yaml), its validation and the
objects it names.

``edit.strategy`` and ``edit.targets`` each take a built-in name, which is a shorthand for the
``_target_`` of a built-in class (kaelab.editing.strategies.STRATEGIES,
kaelab.editing.targets.TARGET_RULES), or a ``_target_`` config of a user's class, e.g.

    edit.targets='{_target_: mypkg.MyRule, cls: 3}'     # a kaelab.editing.targets.TargetRule
    edit.strategy='{_target_: mypkg.MyStrategy}'         # a kaelab.editing.strategies.EditStrategy

built with hydra.utils.instantiate. ``check_edit_config`` validates the whole group, the classes
named included, before any work; ``build_edit_strategy`` builds the strategy.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, OmegaConf

from kaelab.errors import ConfigError, check_choice
from kaelab.instantiate import check_target, instantiate

if TYPE_CHECKING:
    from kaelab.editing.strategies import EditStrategy


@dataclass
class EditConfig:
    target_class: Any = MISSING  # the class to forget, or a list of classes forgotten in one edit
    # emmet (Algorithm 1) | spectral (suppress the forgotten classes' modes) | a _target_ config of a
    # kaelab.editing.strategies.EditStrategy
    strategy: Any = "emmet"
    # where the forgotten keys are sent (kaelab.editing.targets): nearest_retained (the reference's),
    # class_centroid (all to the centroid of class redirect_to), nearest_retained_centroid (each to
    # the output centroid of the retained class nearest to it) | a _target_ config of a TargetRule
    targets: Any = "nearest_retained_centroid"
    redirect_to: Optional[int] = None  # class_centroid's destination class D (a rule's redirect_to argument)
    keys_from: str = "inverse"  # inverse: K^-1 phi(x_j) (Algorithm 1, step 2); encoded: phi(x_i)
    mu: float = 0.1  # EMMET: C0 = K0 K0^T + mu I
    lam: float = 0.1  # EMMET: lambda on the E x E system (the preservation weight in the p x p form)
    form: str = "auto"  # EMMET system: auto | ExE | pxp
    # spectral (kaelab.editing.spectral): modes whose share of the forgotten samples' modal energy is
    # at least spectral_ratio times their share of the retained ones' get their eigenvalue times
    # spectral_scale
    spectral_ratio: float = 2.0
    # spectral: the factor the selected modes' eigenvalues are multiplied by (0: removed)
    spectral_scale: float = 0.0
    # spectral: change at most this many modes, the most specific first (None: no limit)
    spectral_max_modes: Optional[int] = None
    compare_retrain: bool = False  # also train the base model without the forgotten classes (cached)
    figure: bool = True  # Figure 4: top-3 PCs of observable-space outputs before / after
    # test samples drawn in Figure 4 (the first this many)
    figure_points: int = 10000


# keys the stage reads itself; every other key of the group is passed to a strategy's constructor
# argument of the same name (unless its _target_ config sets that argument)
STAGE_KEYS = ("target_class", "strategy", "redirect_to", "compare_retrain", "figure", "figure_points")
# lower bounds (value, inclusive) of the group's keys and of the same-named arguments in a
# strategy's or target rule's _target_ config
LOWER = {
    "mu": (0, True),
    "lam": (0, True),
    "spectral_ratio": (0, False),
    "spectral_scale": (0, True),
    "spectral_max_modes": (1, True),
    "figure_points": (1, True),
}


def choices() -> dict[str, tuple[str, ...]]:
    """The named choices of the group's keys (and of same-named _target_ arguments)."""
    from kaelab.editing.emmet import FORMS  # torch: imported when a run checks its config
    from kaelab.editing.unlearning import KEY_SOURCES

    return {"keys_from": KEY_SOURCES, "form": FORMS}


def forget_classes(target_class: Any) -> list[int]:
    """``edit.target_class`` as a sorted list of class indices (an int or a list in config)."""
    tc = target_class
    raw = list(tc) if OmegaConf.is_list(tc) or isinstance(tc, (list, tuple)) else [tc]
    if not raw:
        raise ConfigError("edit.target_class is an empty list: name at least one class to forget")
    out = []
    for c in raw:
        if isinstance(c, bool) or not isinstance(c, int):
            raise ConfigError(f"edit.target_class entries must be class indices (int), got {c!r}")
        out.append(c)
    return sorted(set(out))


def variant_node(value: Any, builtins: Mapping[str, str], key: str) -> dict[str, Any]:
    """``edit.strategy`` / ``edit.targets`` as a ``_target_`` config: a built-in name is looked up
    in ``builtins``; a config is taken as it is."""
    if isinstance(value, str):
        if value not in builtins:
            raise ConfigError(f"{key} must be one of {tuple(builtins)} or a _target_ config, got {value!r}")
        return {"_target_": builtins[value]}
    if isinstance(value, (DictConfig, Mapping)) and "_target_" in value:
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else dict(value)
    raise ConfigError(f"{key} must be one of {tuple(builtins)} or a _target_ config, got {value!r}")


def variant_name(value: Any, builtins: Mapping[str, str]) -> str:
    """The built-in name of a name or of a config whose ``_target_`` is a built-in class, else the
    ``_target_`` (for metrics.json and messages)."""
    if isinstance(value, str):
        return value
    return next((name for name, target in builtins.items() if target == value["_target_"]), str(value["_target_"]))


def redirect_class(ec: DictConfig) -> Optional[int]:
    """The class the target rule redirects to: ``edit.redirect_to`` or the rule config's own."""
    if ec.redirect_to is not None or isinstance(ec.targets, str):
        return ec.redirect_to
    return ec.targets.get("redirect_to")


def _check_values(values: Mapping[str, Any], prefix: str) -> None:
    """Finite floats, the lower bounds in ``LOWER`` and the named ``choices()``."""
    named = choices()
    for name, value in values.items():
        key = f"{prefix}{name}={value}"
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number")
        if name in named:
            check_choice(value, named[name], f"{prefix}{name}")
        if name in LOWER and value is not None:
            low, inclusive = LOWER[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key} must be a number")
            if value < low or (value == low and not inclusive):
                raise ConfigError(f"{key} must be {'>=' if inclusive else '>'} {low}")


def _variant_class(node: dict[str, Any], key: str, base: type, what: str) -> type:
    """The class ``node._target_`` names, which must subclass ``base``."""
    try:
        obj = get_object(node["_target_"])
    except Exception:
        check_target(node, key)  # raises the one-line import error
        raise
    if not (isinstance(obj, type) and issubclass(obj, base)):
        where = f"{base.__module__}.{base.__qualname__}"
        raise ConfigError(f"{key}._target_={node['_target_']!r} is not {what} (a subclass of {where})")
    _check_values({k: v for k, v in node.items() if k != "_target_"}, f"{key}.")
    return obj


def strategy_arguments(ec: DictConfig, node: dict[str, Any], cls: type) -> dict[str, Any]:
    """The group's keys that the strategy ``cls`` takes as arguments and ``node`` does not set."""
    params = inspect.signature(cls).parameters
    return {k: ec[k] for k in params if k in ec and k not in STAGE_KEYS and k not in node}


def _check_targets(ec: DictConfig, forget: list[int], n_classes: Optional[int]) -> None:
    from kaelab.editing.targets import TARGET_RULES, TargetRule  # torch: imported when a run checks its config

    node = variant_node(ec.targets, TARGET_RULES, "edit.targets")
    cls = _variant_class(node, "edit.targets", TargetRule, "a target rule")
    param = inspect.signature(cls).parameters.get("redirect_to")
    name = variant_name(ec.targets, TARGET_RULES)
    if ec.redirect_to is not None and param is None:
        raise ConfigError(f"edit.redirect_to={ec.redirect_to} is not used by edit.targets={name} (class_centroid's)")
    if ec.redirect_to is not None and "redirect_to" in node:
        raise ConfigError("edit.redirect_to and edit.targets.redirect_to are both set: set one")
    dest = redirect_class(ec)
    if param is not None and param.default is param.empty and dest is None:
        raise ConfigError(f"edit.targets={name} needs edit.redirect_to=D (the class to merge into)")
    if dest is not None:
        if isinstance(dest, bool) or not isinstance(dest, int) or dest < 0:
            raise ConfigError(f"edit.redirect_to={dest} must be a class index >= 0")
        if n_classes is not None and dest >= n_classes:
            raise ConfigError(f"edit.redirect_to={dest} is out of range: classes 0..{n_classes - 1}")
        if dest in forget:
            raise ConfigError(f"edit.redirect_to={dest} is one of the forgotten classes {forget}")
    check_target(node, "edit.targets", **({} if ec.redirect_to is None else {"redirect_to": ec.redirect_to}))


def check_forget_range(forget: list[int], n_classes: int) -> None:
    """The forgotten classes against a model of ``n_classes`` classes."""
    bad = [c for c in forget if not 0 <= c < n_classes]
    if bad:
        raise ConfigError(f"edit.target_class={bad[0]} is out of range: the model has classes 0..{n_classes - 1}")
    if len(forget) == n_classes:
        raise ConfigError(f"edit.target_class={forget} forgets every class: nothing would be retained")


def check_edit_config(ec: Optional[DictConfig], n_classes: Optional[int], has_checkpoint: bool) -> list[int]:
    """Fail fast (before anything is trained or cached) on an invalid ``edit`` group, for a base
    model of ``n_classes`` classes (given by a checkpoint: ``has_checkpoint``; None: not known from
    the config, checked against the data later); the classes to forget."""
    if ec is None:
        raise ConfigError("task=edit needs an edit config: add +edit=default, or use +experiment=yinyang_edit")
    _check_values({k: ec[k] for k in ec if k not in ("strategy", "targets")}, "edit.")
    forget = forget_classes(ec.target_class)
    if n_classes is not None:
        check_forget_range(forget, n_classes)
    elif forget[0] < 0:
        raise ConfigError(f"edit.target_class={forget[0]} is out of range: a class index is >= 0")
    _check_targets(ec, forget, n_classes)
    from kaelab.editing.strategies import STRATEGIES, EditStrategy

    node = variant_node(ec.strategy, STRATEGIES, "edit.strategy")
    cls = _variant_class(node, "edit.strategy", EditStrategy, "an edit strategy")
    check_target(node, "edit.strategy", **strategy_arguments(ec, node, cls))
    if ec.compare_retrain and has_checkpoint:
        raise ConfigError("edit.compare_retrain needs the base model's training recipe, not model.checkpoint")
    return forget


def retrain_exclusion_key(cfg: DictConfig) -> str:
    """The data key that leaves the forgotten classes out of a retraining (``edit.compare_retrain``):
    ``exclude_classes`` (whole samples of those classes), or for a sequence model read at token
    positions (``model.positions``) ``exclude_targets`` (those targets ignored where they occur,
    the windows kept: a language model retrained never to predict those tokens)."""
    return "exclude_classes" if OmegaConf.select(cfg, "model.positions", default=None) is None else "exclude_targets"


def check_retrain_data(cfg: DictConfig) -> None:
    """``edit.compare_retrain`` on a sequence model needs a datamodule that takes ``exclude_targets``."""
    from kaelab.instantiate import takes_argument

    key = retrain_exclusion_key(cfg)
    if key == "exclude_targets" and "_target_" in cfg.data and not takes_argument(cfg.data, key):
        raise ConfigError(
            f"edit.compare_retrain with model.positions retrains without the forgotten targets, but data._target_="
            f"{cfg.data._target_} takes no exclude_targets argument (the targets it never trains on)"
        )


def build_edit_strategy(ec: DictConfig) -> EditStrategy:
    """The strategy ``edit.strategy`` names, given the rule ``edit.targets`` names as its
    ``targets`` (after ``check_edit_config``)."""
    from kaelab.editing.strategies import STRATEGIES
    from kaelab.editing.targets import TARGET_RULES

    redirect = {} if ec.redirect_to is None else {"redirect_to": ec.redirect_to}
    rule = instantiate(variant_node(ec.targets, TARGET_RULES, "edit.targets"), "edit.targets", **redirect)
    node = variant_node(ec.strategy, STRATEGIES, "edit.strategy")
    args = strategy_arguments(ec, node, get_object(node["_target_"]))
    if "targets" in args:
        args["targets"] = rule
    return instantiate(node, "edit.strategy", **args)
