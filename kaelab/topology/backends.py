"""Persistence backends: one interface for every engine of Vietoris-Rips persistence.

A backend is any object with

    diagrams(points, maxdim, max_edge_length) -> [bars of dimension 0, ..., bars of dimension maxdim]

``points``: a checked float64 [n, d] tensor (``kaelab.topology.betti.as_points``); bars: arrays
[m, 2] of (birth, death), death = inf for a class alive at ``max_edge_length``, in the convention
of ``kaelab.topology.betti`` (an edge of length <= eps is in the complex at eps, beta_k(eps) counts
the bars with birth <= eps < death). Optionally also

    beta0(points, eps_grid) -> beta_0 at each eps (default: counted from the dimension-0 bars)
    max_dim: the highest dimension it computes (default 1)

Built in (``BUILTIN``: a name is only a shorthand for a ``_target_`` path): ``mst`` (beta_0 only,
exact, one minimum spanning tree), ``gudhi`` (GUDHI's Rips complex), ``giotto`` (giotto-ph's
``ripser_parallel``). A user's class is used from a config alone:
``topology.backend={_target_:mypkg.MyBackend,scale:2}``. The built-in backends are frozen
dataclasses, equal when their settings are, so one backend asked for beta_0 and beta_1 runs once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from kaelab.errors import ConfigError
from kaelab.instantiate import check_target, instantiate, takes_argument
from kaelab.topology import persistence as B
from kaelab.topology.defaults import DEFAULT_COLLAPSE, MAX_DIM


class PersistenceBackend:
    """Base class of the built-in backends: beta_0 counted from the dimension-0 bars."""

    max_dim: ClassVar[int] = MAX_DIM

    def diagrams(self, points: torch.Tensor, maxdim: int = MAX_DIM, max_edge_length: float = np.inf):
        raise NotImplementedError

    def beta0(self, points: torch.Tensor, eps_grid) -> np.ndarray:
        grid = B.check_eps_grid(eps_grid)
        return B.betti_from_bars(self.diagrams(points, 0, float(grid.max()))[0], grid)


@dataclass(frozen=True)
class MSTBackend(PersistenceBackend):
    """beta_0 only, exact for every eps: beta_0(eps) = 1 + #{MST edges longer than eps}
    (``betti.mst_edges``; ``precision``: of the distances Prim's algorithm runs on, the tree is
    exact either way)."""

    precision: str = "float32"
    max_dim: ClassVar[int] = 0

    def __post_init__(self) -> None:
        if self.precision not in B.PRECISIONS:
            raise ConfigError(f"unknown MST precision {self.precision!r} (one of {', '.join(B.PRECISIONS)})")

    def diagrams(self, points, maxdim: int = 0, max_edge_length: float = np.inf) -> list[np.ndarray]:
        if maxdim > 0:
            raise ConfigError("the mst backend computes beta_0 only (a tree has no cycles): give an h1_backend")
        bars = B.diagram_h0_mst(points, self.precision)
        bars[bars[:, 1] > max_edge_length, 1] = np.inf  # alive at the threshold, as GUDHI reports it
        return [bars]

    def beta0(self, points, eps_grid) -> np.ndarray:
        return B.beta0_from_mst(B.mst_edges(points, self.precision)[1], eps_grid)


@dataclass(frozen=True)
class GudhiBackend(PersistenceBackend):
    """GUDHI's Rips complex (``betti.diagrams_gudhi``); ``collapse``: GUDHI's edge collapse first."""

    collapse: bool = DEFAULT_COLLAPSE

    def diagrams(self, points, maxdim: int = MAX_DIM, max_edge_length: float = np.inf) -> list[np.ndarray]:
        return B.diagrams_gudhi(points, maxdim, max_edge_length, self.collapse)


@dataclass(frozen=True)
class GiottoBackend(PersistenceBackend):
    """giotto-ph's ``ripser_parallel`` (``betti.diagrams_giotto``; float32 distances internally)."""

    collapse: bool = DEFAULT_COLLAPSE
    n_threads: int = -1

    def diagrams(self, points, maxdim: int = MAX_DIM, max_edge_length: float = np.inf) -> list[np.ndarray]:
        return B.diagrams_giotto(points, maxdim, max_edge_length, self.collapse, self.n_threads)


BUILTIN = {
    "mst": f"{__name__}.MSTBackend",
    "gudhi": f"{__name__}.GudhiBackend",
    "giotto": f"{__name__}.GiottoBackend",
}
BACKENDS = tuple(BUILTIN)


def backend_node(spec: Any, key: str = "backend") -> dict[str, Any]:
    """The ``_target_`` config a backend setting stands for (a built-in name: its path in BUILTIN)."""
    if isinstance(spec, str):
        if spec not in BUILTIN:
            raise ConfigError(
                f"unknown topology backend {key}={spec!r} (one of {', '.join(BACKENDS)}, or a config with a _target_)"
            )
        return {"_target_": BUILTIN[spec]}
    if isinstance(spec, DictConfig):
        return OmegaConf.to_container(spec, resolve=True)  # type: ignore[return-value]
    if isinstance(spec, Mapping):
        return dict(spec)
    raise ConfigError(f"{key} must be a backend name ({', '.join(BACKENDS)}) or a config with a _target_")


def _given(node: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The stage-wide settings (``collapse``) a backend takes and its own config does not set."""
    return {k: v for k, v in defaults.items() if k not in node and takes_argument(node, k)}


def check_backend_spec(spec: Any, key: str, needs_h1: bool = False, **defaults: Any) -> None:
    """A backend setting checked without building it: the ``_target_`` imports, its arguments bind,
    and (``needs_h1``) it computes beta_1. One-line ConfigError naming ``key``."""
    node = backend_node(spec, key)
    target = check_target(node, key, **_given(node, defaults))
    if needs_h1 and getattr(target, "max_dim", MAX_DIM) < 1:
        raise ConfigError(f"{key}={backend_label(spec)} computes beta_0 only (a tree has no cycles): use giotto, gudhi")


def resolve_backend(spec: Any, key: str = "backend", **defaults: Any) -> Any:
    """A backend object from a built-in name, a ``_target_`` config (built with
    ``hydra.utils.instantiate``; ``defaults`` fill the arguments it takes and does not set) or a
    backend object (returned as is)."""
    if isinstance(spec, (str, Mapping, DictConfig)):
        node = backend_node(spec, key)
        spec = instantiate(node, key, **_given(node, defaults))
    if not callable(getattr(spec, "diagrams", None)):
        raise ConfigError(
            f"{key}: a {type(spec).__name__} is no persistence backend (no diagrams(points, maxdim, max_edge_length))"
        )
    return spec


def max_dim(backend: Any) -> int:
    """The highest homology dimension ``backend`` computes."""
    return int(getattr(backend, "max_dim", MAX_DIM))


def backend_label(spec: Any) -> str:
    """A backend setting in words: its name, its ``_target_``, or its class."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, (Mapping, DictConfig)):
        return str(spec.get("_target_"))
    return type(spec).__name__


def diagrams_of(backend: Any, points: torch.Tensor, maxdim: int, max_edge_length: float) -> list[np.ndarray]:
    """``backend.diagrams`` as float64 arrays [m, 2], dimensions 0..maxdim; one-line ConfigError if
    it answers with fewer dimensions."""
    out = list(backend.diagrams(points, maxdim, max_edge_length))
    if len(out) < maxdim + 1:
        raise ConfigError(
            f"backend {backend_label(backend)} gave {len(out)} diagram(s) for dimensions 0..{maxdim} ({maxdim + 1})"
        )
    return [np.asarray(bars, dtype=np.float64).reshape(-1, 2) for bars in out[: maxdim + 1]]


def beta0_curve(backend: Any, points: torch.Tensor, eps_grid) -> np.ndarray:
    """beta_0 at each eps of the grid: ``backend.beta0`` if it has one, else counted from its
    dimension-0 bars up to the largest eps."""
    grid = B.check_eps_grid(eps_grid)
    if callable(getattr(backend, "beta0", None)):
        values = np.asarray(backend.beta0(points, grid), dtype=np.int64).reshape(-1)
        if len(values) != len(grid):
            raise ConfigError(f"backend {backend_label(backend)} gave {len(values)} beta_0 values for {len(grid)} eps")
        return values
    return B.betti_from_bars(diagrams_of(backend, points, 0, float(grid.max()))[0], grid)
