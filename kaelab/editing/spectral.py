"""Spectral unlearning (``edit.strategy=spectral``; not in the KAE paper, an alternative to its
Algorithm 1): suppress the Koopman modes that carry the forgotten classes.

With the KAE's generator G = V diag(mu) V^-1 (kaelab.koopman.spectrum; K = V diag(exp(mu)) V^-1):

1. modal coordinates b = V^-1 phi(x_i) of the training keys (the observables K acts on);
2. each mode's specificity s_r = the share of the forgotten samples' modal energy in mode r / the
   retained samples' share (kaelab.koopman.spectrum.class_mode_specificity);
3. the modes with s_r >= ``ratio`` (at most ``max_modes`` of the most specific; at least the most
   specific one) have their eigenvalue multiplied by ``scale`` (0: removed):
   K' = K + V diag(lambda' - lambda) V^-1, real because a mode and its conjugate have the same s_r.

No linear system is solved and no alternative outputs are chosen: the forgotten classes' outputs
lose their components in those modes, and so do the retained samples' (by their smaller share).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kaelab.editing.emmet import EditInfo
from kaelab.editing.unlearning import OperatorEdit, encode, exclusive_energy
from kaelab.errors import ConfigError
from kaelab.koopman.kae import KoopmanAutoencoder
from kaelab.koopman.spectrum import ModalStats, Spectrum, class_mode_specificity, modal_stats


@dataclass
class SpectralSelection:
    modes: list[int]  # indices into the spectrum's modes
    specificity: list[float]  # s_r of each selected mode
    forget_energy_share: float  # of the forgotten samples' modal energy, in the selected modes
    retain_energy_share: float  # of the retained samples' modal energy, in the selected modes


def select_modes(stats: ModalStats, forget: Sequence[int], ratio: float, max_modes: int | None) -> SpectralSelection:
    """The modes whose energy is concentrated in the forgotten classes (conjugate pairs kept whole)."""
    s = class_mode_specificity(stats, forget)
    order = torch.argsort(s, descending=True, stable=True)
    chosen = [int(r) for r in order if s[r] >= ratio] or [int(order[0])]
    if max_modes is not None:
        chosen = chosen[:max_modes]
    # a conjugate pair has equal s_r: take both partners of any chosen mode so K' stays real
    tol = 1e-9 * s.abs().max()
    chosen_set = set(chosen)
    for r in list(chosen):
        chosen_set.update(int(q) for q in torch.nonzero((s - s[r]).abs() <= tol).flatten())
    chosen = sorted(chosen_set, key=lambda r: -s[r].item())
    mask = torch.zeros(len(stats.count), dtype=torch.bool)
    mask[list(forget)] = True
    share = lambda e: (e[:, chosen].sum() / e.sum()).item()  # noqa: E731
    return SpectralSelection(chosen, s[chosen].tolist(), share(stats.sum_e[mask]), share(stats.sum_e[~mask]))


@torch.no_grad()
def spectral_unlearn(
    kae: KoopmanAutoencoder,
    spec: Spectrum,
    x_i: torch.Tensor,
    labels: torch.Tensor,
    forget: Sequence[int],
    ratio: float = 2.0,
    scale: float = 0.0,
    max_modes: int | None = None,
) -> tuple[OperatorEdit, SpectralSelection]:
    """The edited operator K' for preprocessed training x_i [n, d] with ``labels``."""
    if ratio <= 0:
        raise ConfigError(f"edit.spectral_ratio={ratio} must be > 0")
    mask = torch.isin(labels, torch.as_tensor(list(forget), dtype=labels.dtype))
    if not mask.any() or mask.all():
        raise ConfigError(f"edit.target_class={list(forget)} must leave some training samples on each side")
    t0 = time.perf_counter()
    K = torch.linalg.matrix_exp(kae.koopman.G.detach().double())
    z = encode(kae, x_i).double()
    t1 = time.perf_counter()
    stats = modal_stats(spec, z, labels, int(labels.max()) + 1)
    sel = select_modes(stats, forget, ratio, max_modes)
    lam = spec.eig_K
    change = torch.zeros_like(lam)
    change[sel.modes] = lam[sel.modes] * (scale - 1.0)
    K_after = K + spec.operator(change)
    t2 = time.perf_counter()
    info = EditInfo("spectral", len(sel.modes), len(lam) - len(sel.modes), spec.cond(), "eig")
    return OperatorEdit(K, K_after, info, t2 - t0, t2 - t1, exclusive_energy(z[mask], z[~mask])), sel
