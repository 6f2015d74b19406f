"""Config schema of the topology stage (``topology`` group; conf/topology/*.yaml) and its one check.

Defaults: the KAE paper's MNIST settings (Figure 3: eps 0.166 for the network's layers, 0.14 for
the KAE's decoded steps, in the preprocessed space of Sec. 3.3). The defaults this schema shares
with the pure functions of ``kaelab.topology.betti`` (backend, beta_1 backend, edge collapse,
highest dimension) are the constants below, read by both.

``topology.backend`` and ``topology.h1_backend`` take a built-in name (``mst``, ``gudhi``,
``giotto``: shorthands for ``_target_`` paths, ``kaelab.topology.backends.BUILTIN``) or a
``_target_`` config of any class with ``diagrams(points, maxdim, max_edge_length)``, e.g.
``topology.backend={_target_:mypkg.MyBackend,scale:2}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import OmegaConf

from kaelab.errors import ConfigError, check_choice
from kaelab.topology.defaults import DEFAULT_BACKEND, DEFAULT_COLLAPSE, DEFAULT_H1_BACKEND, MAX_DIM

SPLITS = ("train", "val", "test")
FLOAT_KEYS = ("layer_eps", "step_eps", "eps_min", "eps_max")
SIZE_KEYS = ("n_points", "curve_points", "figure_points", "eps_num", "figure_steps")  # integers >= 1
MIN_SIZE = {"eps_num": 2, "figure_steps": 2}  # a grid and a figure of steps need both ends


@dataclass
class TopologyConfig:
    backend: Any = DEFAULT_BACKEND  # beta_0: mst | gudhi | giotto, or a _target_ config (one interface: backends.py)
    split: str = "test"  # data split whose representations are measured
    seed: int = 0  # subsample seed
    n_points: Optional[int] = None  # beta_0 of every layer and KAE step on this many points (None: the whole split)
    layer_eps: float = 0.166  # filtration value for beta_0 through depth (Figure 3, top left)
    step_eps: float = 0.14  # filtration value for beta_0 of the KAE's decoded steps (Figure 3, top right)
    layers: bool = True  # beta_0 of every representation of the base model
    steps: bool = True  # beta_0 of the KAE's k+1 decoded intermediate states
    curves: bool = True  # Betti curves of x_j in the original and the KAE's observable space (Figure 2B)
    curve_points: Optional[int] = (
        2000  # points for the Betti curves (None: all; beta_1 needs the Rips complex: keep it small)
    )
    maxdim: int = MAX_DIM  # highest Betti number of the curves (0 or 1)
    eps_min: float = 0.0  # Betti-curve grid: eps_num values from eps_min to eps_max
    eps_max: Optional[float] = None  # None: 1.1 x the longest MST edge of the original x_j (beta_0 reaches 1)
    # number of filtration values on the Betti-curve grid (>= 2)
    eps_num: int = 100
    h1_backend: Any = DEFAULT_H1_BACKEND  # beta_1 of the curves: giotto (ripser) | gudhi | a _target_ config
    collapse_edges: bool = DEFAULT_COLLAPSE  # given to a backend that takes ``collapse`` and sets none
    # write the figures (beta_0 through depth, Betti curves, PCA panels of the KAE's steps)
    figures: bool = True
    figure_points: Optional[int] = 2000  # points per PCA panel (None: the whole split)
    figure_steps: int = 6  # KAE steps shown in the PCA figure (evenly spaced, first and last included)
    reference_layers: Optional[list[int]] = None  # published beta_0 per layer, drawn beside ours (MNIST: the paper's)
    # classes shown together in the figures, {name: [class indices] or a string whose characters'
    # code points are the classes (byte classes: digits: "0123456789")}; each group one colour,
    # classes in no group "other". None: one colour per class (ten at most, the rest "other")
    groups: Optional[dict[str, Any]] = None


def _check_float(tc: Any, key: str) -> None:
    value = getattr(tc, key)
    if value is None and key == "eps_max":  # optional: from the data
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"topology.{key}={value} must be a finite filtration value >= 0")


def _check_size(tc: Any, key: str) -> None:
    value, low = getattr(tc, key), MIN_SIZE.get(key, 1)
    if value is None and key not in MIN_SIZE:  # optional: the whole split
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"topology.{key}={value} must be an integer >= {low}")


def check_topology_config(tc: Any) -> None:
    """Every setting of the ``topology`` group, checked once before any work: a one-line
    ConfigError naming the key. ``tc`` is the group's node (``cfg.topology``). The backends are
    checked without being built (their ``_target_`` imported and its arguments bound). Takes the
    group's DictConfig or a ``TopologyConfig``."""
    from kaelab.topology.backends import check_backend_spec  # imports torch: not at schema import

    if tc is None:
        raise ConfigError(
            "task=topology needs a topology config: add +topology=default or use +experiment=yinyang_topology"
        )
    for key in FLOAT_KEYS:
        _check_float(tc, key)
    if tc.eps_max is not None and not tc.eps_max > tc.eps_min:
        raise ConfigError(f"topology.eps_max={tc.eps_max} must be larger than topology.eps_min={tc.eps_min}")
    for key in SIZE_KEYS:
        _check_size(tc, key)
    if tc.maxdim not in range(MAX_DIM + 1):
        raise ConfigError(f"topology.maxdim={tc.maxdim} must be 0 or 1")
    check_choice(tc.split, SPLITS, "topology.split")
    for value in tc.reference_layers or []:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"topology.reference_layers={list(tc.reference_layers)}: a beta_0 is an integer >= 1")
    class_groups(tc.groups)
    check_backend_spec(tc.backend, "topology.backend", collapse=tc.collapse_edges)
    check_backend_spec(tc.h1_backend, "topology.h1_backend", collapse=tc.collapse_edges, needs_h1=True)


def class_groups(groups: Any) -> dict[str, list[int]]:
    """``topology.groups`` as ``{name: sorted class indices}`` (a string names the code points of
    its characters), checked: at most ten groups (one colour each), every group non-empty, no
    class in two groups. ``{}`` for None."""
    if groups is None:
        return {}
    if OmegaConf.is_config(groups):
        groups = OmegaConf.to_container(groups, resolve=True)
    out: dict[str, list[int]] = {}
    seen: dict[int, str] = {}
    for name, value in dict(groups).items():
        if isinstance(value, str):
            classes = [ord(ch) for ch in value]
        elif isinstance(value, (list, tuple)):
            classes = list(value)
        else:
            classes = [value]
        if not classes or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in classes):
            raise ConfigError(f"topology.groups.{name}={value!r} must be class indices >= 0 or a string of characters")
        for c in classes:
            if c in seen and seen[c] != name:
                raise ConfigError(f"topology.groups: class {c} is in both {seen[c]!r} and {name!r}")
            seen[c] = name
        out[str(name)] = sorted(set(classes))
    if len(out) > 10:
        raise ConfigError(f"topology.groups has {len(out)} groups; a figure tells at most 10 apart by colour")
    return out
