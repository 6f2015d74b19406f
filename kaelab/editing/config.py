"""Config schema of the edit stage (``edit`` group; conf/edit/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING


@dataclass
class EditConfig:
    target_class: Any = MISSING  # the class to forget, or a list of classes forgotten in one edit
    strategy: str = "emmet"  # emmet (Algorithm 1) | spectral (suppress the forgotten classes' modes)
    # where the forgotten keys are sent (kaelab.editing.targets): nearest_retained (the reference's),
    # class_centroid (all to the centroid of class redirect_to), nearest_retained_centroid (each to
    # the output centroid of the retained class nearest to it)
    targets: str = "nearest_retained_centroid"
    redirect_to: Optional[int] = None  # class_centroid's destination class D
    keys_from: str = "inverse"  # inverse: K^-1 phi(x_j) (Algorithm 1, step 2); encoded: phi(x_i)
    mu: float = 0.1  # EMMET: C0 = K0 K0^T + mu I
    lam: float = 0.1  # EMMET: lambda on the E x E system (the preservation weight in the p x p form)
    form: str = "auto"  # EMMET system: auto | ExE | pxp
    # spectral (kaelab.editing.spectral): modes whose share of the forgotten samples' modal energy is
    # at least spectral_ratio times their share of the retained ones' get their eigenvalue times
    # spectral_scale
    spectral_ratio: float = 2.0
    spectral_scale: float = 0.0
    spectral_max_modes: Optional[int] = None
    compare_retrain: bool = False  # also train the base model without the forgotten classes (cached)
    figure: bool = True  # Figure 4: top-3 PCs of observable-space outputs before / after
    figure_points: int = 10000
