"""Config schema of the topology stage (``topology`` group; conf/topology/*.yaml).

Defaults: the KAE paper's MNIST settings (Figure 3: eps 0.166 for the network's layers, 0.14 for
the KAE's decoded steps, in the preprocessed space of Sec. 3.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class TopologyConfig:
    backend: str = "mst"  # beta_0: mst (exact, one minimum spanning tree) | gudhi | giotto; beta_1: gudhi (giotto)
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
    maxdim: int = 1  # highest Betti number of the curves (0 or 1)
    eps_min: float = 0.0  # Betti-curve grid: eps_num values from eps_min to eps_max
    eps_max: Optional[float] = None  # None: 1.1 x the longest MST edge of the original x_j (beta_0 reaches 1)
    eps_num: int = 100
    h1_backend: str = "giotto"  # beta_1 of the curves: giotto (ripser) | gudhi (Rips + expansion; see betti.py)
    collapse_edges: bool = False  # edge collapse before the expansion: helps at small eps only (see betti.py)
    figures: bool = True
    figure_points: Optional[int] = 2000  # points per PCA panel (None: the whole split)
    figure_steps: int = 6  # KAE steps shown in the PCA figure (evenly spaced, first and last included)
    reference_layers: Optional[list[int]] = None  # published beta_0 per layer, drawn beside ours (MNIST: the paper's)
