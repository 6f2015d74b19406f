"""Class unlearning by editing the KAE's Koopman operator (KAE paper, Sec. 4.3, Algorithm 1).

Given a trained KAE {phi, K, phi^-1}, preprocessed training representations (x_i, x_j) with labels
and the classes to forget:

1. Z_del = phi(x_j) of the forgotten classes; Z_keep = phi(x_j) of the others;
2. X_mem = K^-1 Z_del (the latent inputs that produce them; K^-1 = exp(-G) always exists),
   X_keep = phi(x_i) of the retained samples;
3. Z_new = alternative outputs for X_mem (kaelab.editing.targets);
4. K' = EMMET(K, {X_mem, Z_new}, preserving X_keep) (kaelab.editing.emmet);
5. the surrogate then predicts phi^-1(K' phi(x_i)).

Pure tensors in, tensors out: usable from a notebook on any KoopmanAutoencoder.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kaelab.editing.emmet import EditInfo, emmet
from kaelab.editing.statistics import KeyStatistics
from kaelab.editing.targets import alternative_outputs, centroid_outputs
from kaelab.errors import ConfigError, check_choice
from kaelab.koopman.kae import KoopmanAutoencoder

KEY_SOURCES = ("inverse", "encoded")


@dataclass
class OperatorEdit:
    K_before: torch.Tensor  # [p, p] float64
    K_after: torch.Tensor  # [p, p] float64
    info: EditInfo
    time_s: float  # the whole of Algorithm 1 (encoding, keys, targets, EMMET)
    solve_time_s: float  # EMMET alone
    exclusive_energy: float  # of the edit keys, outside the retained keys' principal subspace


def exclusive_energy(
    keys_edit: torch.Tensor, keys_keep: torch.Tensor | None = None, keep: float = 0.99, keep_gram=None
) -> float:
    """Fraction of the edit keys' energy (sum of squared norms) outside the subspace that holds
    ``keep`` of the retained keys' energy (rows are keys; the retained keys may be given by their
    Gram matrix ``keep_gram`` = sum of k k^T instead).

    A linear edit can move the forgotten outputs without moving the retained ones only along
    directions the retained keys do not use: near 0, every direction that carries a forgotten key
    also carries retained ones, and EMMET must trade forgetting against retention; near 1, the
    forgotten class has directions of its own. Measured: 0.03-0.07 on Yin-Yang's 20-d observables and
    0.03-0.16 on MNIST's 800-d ones, so on both the targets decide how far a forgotten output moves.
    """
    if keep_gram is None:
        k0 = keys_keep.double()
        keep_gram = k0.T @ k0
    evals, evecs = torch.linalg.eigh(keep_gram.double())  # ascending; the right singular vectors of k0
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    energy = evals.cumsum(0) / evals.sum()
    r = int((energy < keep).sum().item()) + 1
    inside = (keys_edit.double() @ evecs[:, :r]).pow(2).sum()
    return 1.0 - (inside / keys_edit.double().pow(2).sum()).item()


@torch.no_grad()
def encode(kae: KoopmanAutoencoder, x: torch.Tensor, batch_size: int = 16384) -> torch.Tensor:
    kae.eval()
    return torch.cat([kae.encoder(x[s : s + batch_size]) for s in range(0, len(x), batch_size)])


@torch.no_grad()
def unlearn_classes(
    kae: KoopmanAutoencoder,
    x_i: torch.Tensor,
    x_j: torch.Tensor,
    labels: torch.Tensor,
    forget: Sequence[int],
    num_classes: int,
    targets: str = "nearest_retained",
    redirect_to: int | None = None,
    keys: str = "inverse",
    mu: float = 0.1,
    lam: float = 0.1,
    form: str = "auto",
    stats: KeyStatistics | None = None,
) -> OperatorEdit:
    """Algorithm 1 on preprocessed training pairs (x_i, x_j) [n, d]: the edited operator K'.

    With ``stats`` (kaelab.editing.statistics, computed from the same pairs) the retained samples
    enter through their per-class sums and are not encoded again, except for the reference's
    ``nearest_retained`` targets, which need every retained key."""
    check_choice(keys, KEY_SOURCES, "edit.keys_from")
    if stats is not None and stats.num_classes != num_classes:
        raise ConfigError(f"key statistics of {stats.num_classes} classes given for a {num_classes}-class edit")
    t0 = time.perf_counter()
    G = kae.koopman.G.detach().double()
    K = torch.linalg.matrix_exp(G)
    mask = torch.isin(labels, torch.as_tensor(list(forget), dtype=labels.dtype))
    if not mask.any():
        raise ConfigError(f"edit.target_class={list(forget)}: no training sample of these classes")
    if mask.all():
        raise ConfigError("edit.target_class covers every training sample: nothing would be retained")
    z_del = encode(kae, x_j[mask]).double()  # step 1a
    if keys == "inverse":  # step 2a: X_mem = K^-1 Z_del
        keys_edit = z_del @ torch.linalg.matrix_exp(-G).T
    else:
        keys_edit = encode(kae, x_i[mask]).double()
    if stats is not None and targets != "nearest_retained":  # steps 1b, 2b and 3 from the class sums
        keep_gram, n_keep = stats.preserve_gram(forget), stats.n_preserved(forget)
        values = centroid_outputs(targets, K, keys_edit, stats.output_centroids(forget), redirect_to)
    else:
        keys_keep = encode(kae, x_i[~mask]).double()  # step 2b
        keep_gram, n_keep = keys_keep.T @ keys_keep, len(keys_keep)
        labels_keep = labels[~mask]
        outputs_keep = encode(kae, x_j[~mask]).double() if targets != "nearest_retained" else keys_keep @ K.T
        values = alternative_outputs(  # step 3
            targets, K, keys_edit, keys_keep, outputs_keep, labels_keep, num_classes, redirect_to
        )
    t1 = time.perf_counter()
    K_after, info = emmet(  # step 4
        K, keys_edit.T, values.T, None, mu=mu, lam=lam, form=form, preserve_gram=keep_gram, n_preserve=n_keep
    )
    t2 = time.perf_counter()
    return OperatorEdit(K, K_after, info, t2 - t0, t2 - t1, exclusive_energy(keys_edit, keep_gram=keep_gram))


def spectral_radius(K: torch.Tensor) -> float:
    return torch.linalg.eigvals(K.double()).abs().max().item()
