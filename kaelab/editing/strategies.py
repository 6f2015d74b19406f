"""Edit strategies: how the KAE's operator is edited to forget classes (``edit.strategy``).

A strategy is an object with ``edit(kae, x_i, x_j, labels, forget, num_classes, cache)`` ->
``OperatorEdit`` (K before and after, how it was solved, the strategy's own metrics), on
preprocessed training pairs (x_i, x_j) [n, d]. ``cache`` (optional) gives what is computed once per
KAE and cached by the edit stage (``KAECache``); without it a strategy computes what it needs.

Built-ins (``edit.strategy=NAME``, a shorthand for the ``_target_`` in ``STRATEGIES``):

* ``emmet``: Algorithm 1 of the KAE paper (kaelab.editing.unlearning) with a target rule
  (kaelab.editing.targets);
* ``spectral``: suppress the Koopman modes that carry the forgotten classes
  (kaelab.editing.spectral).

The edit stage passes each constructor argument named like a key of the ``edit`` group (mu, lam,
form, keys_from, targets, spectral_*) that key's value, unless the ``_target_`` config sets it;
``targets`` arrives as a built ``TargetRule``.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

import torch

from kaelab.editing.statistics import KeyStatistics
from kaelab.editing.targets import TARGET_RULES, TargetRule, target_rule
from kaelab.editing.unlearning import OperatorEdit, unlearn_classes
from kaelab.koopman.kae import KoopmanAutoencoder
from kaelab.koopman.spectrum import Spectrum

log = logging.getLogger(__name__)

# built-in strategy name -> its _target_ (kaelab.editing.config resolves edit.strategy=NAME through this)
STRATEGIES = {
    "emmet": "kaelab.editing.strategies.Emmet",
    "spectral": "kaelab.editing.strategies.Spectral",
}


class KAECache(Protocol):
    """What the edit stage computes once per KAE and caches (kaelab.editing.pipeline.StageCache)."""

    def key_statistics(self) -> KeyStatistics: ...

    def spectrum(self) -> Spectrum: ...


class EditStrategy(ABC):
    """Edits a KAE's operator so that it forgets classes (see the module docstring)."""

    @property
    def label(self) -> str:
        """A few words for figure titles and the log."""
        return type(self).__name__

    @abstractmethod
    def edit(
        self,
        kae: KoopmanAutoencoder,
        x_i: torch.Tensor,
        x_j: torch.Tensor,
        labels: torch.Tensor,
        forget: Sequence[int],
        num_classes: int,
        cache: KAECache | None = None,
    ) -> OperatorEdit: ...


class Emmet(EditStrategy):
    """Algorithm 1 (KAE paper Sec. 4.3): EMMET (Eq. in kaelab.editing.emmet) sends the forgotten
    keys to the targets of ``targets`` while preserving the retained keys."""

    def __init__(
        self,
        targets: str | TargetRule = "nearest_retained_centroid",
        keys_from: str = "inverse",
        mu: float = 0.1,
        lam: float = 0.1,
        form: str = "auto",
    ):
        self.targets = target_rule(targets)
        self.keys_from, self.mu, self.lam, self.form = keys_from, mu, lam, form

    @property
    def label(self) -> str:
        """The target rule's built-in name, or its class path."""
        path = f"{type(self.targets).__module__}.{type(self.targets).__qualname__}"
        return next((name for name, target in TARGET_RULES.items() if target == path), path)

    def edit(self, kae, x_i, x_j, labels, forget, num_classes, cache=None) -> OperatorEdit:
        # the per-class statistics stand in for the retained samples unless the rule reads every key
        stats = cache.key_statistics() if cache is not None and not self.targets.reads_keys else None
        edit = unlearn_classes(
            kae, x_i, x_j, labels, forget, num_classes, self.targets, None, self.keys_from,
            self.mu, self.lam, self.form, stats,
        )  # fmt: skip
        info = edit.info
        log.info(
            "EMMET: %d edit keys, %d preserved, %s form, %s solve, cond %.3g, %.3f s (solve %.3f s)",
            info.n_edit, info.n_preserve, info.form, info.solver, info.cond, edit.time_s, edit.solve_time_s,
        )  # fmt: skip
        return edit


class Spectral(EditStrategy):
    """Suppress the modes whose share of the forgotten samples' modal energy is at least
    ``spectral_ratio`` times their share of the retained ones' (at most ``spectral_max_modes``):
    their eigenvalues times ``spectral_scale`` (kaelab.editing.spectral)."""

    label = "spectral edit"

    def __init__(self, spectral_ratio: float = 2.0, spectral_scale: float = 0.0, spectral_max_modes: int | None = None):
        self.ratio, self.scale, self.max_modes = spectral_ratio, spectral_scale, spectral_max_modes

    def edit(self, kae, x_i, x_j, labels, forget, num_classes, cache=None) -> OperatorEdit:
        from kaelab.editing.spectral import spectral_unlearn
        from kaelab.koopman.spectrum import decompose

        t0 = time.perf_counter()  # the decomposition's load or build time counts as edit time
        spec = cache.spectrum() if cache is not None else decompose(kae.koopman.G, kae.koopman.k)
        t_spec = time.perf_counter() - t0
        edit, sel = spectral_unlearn(kae, spec, x_i, labels, forget, self.ratio, self.scale, self.max_modes)
        edit.time_s += t_spec
        edit.metrics.update(
            {
                "edit/spectral_modes": sel.modes,
                "edit/spectral_specificity": sel.specificity,
                "edit/spectral_forget_energy_share": sel.forget_energy_share,
                "edit/spectral_retain_energy_share": sel.retain_energy_share,
            }
        )
        log.info(
            "spectral edit: %d modes %s suppressed (x%g), carrying %.3f of the forgotten and %.3f of the retained "
            "samples' modal energy, %.3f s",
            len(sel.modes), sel.modes, self.scale, sel.forget_energy_share, sel.retain_energy_share, edit.time_s,
        )  # fmt: skip
        return edit
