"""Spectral analysis of the KAE's operator K = exp(G) and its one-step A = exp(G/k) (KAE paper, Eq. 12;
its future work: "what does the operator's spectrum say about the network").

One eigendecomposition G = V diag(mu) V^-1 (float64, LAPACK geev through torch.linalg.eig) gives
both operators: K = V diag(exp(mu)) V^-1 and A = V diag(exp(mu / k)) V^-1, so eigenvalues of K are
exp(mu) and of A exp(mu / k), with the same eigenvectors (the modes). From it:

* spectral radii of K and A, how many eigenvalues lie outside the unit circle (growing modes);
* the 2-norm condition number of V (how far K is from normal: 1 for an orthogonal V);
* effective rank of K (Roy & Vetterli 2007: exp of the entropy of its normalised singular values);
* modal coordinates b = V^-1 z of observables z (rows: B = Z V^-T, by a linear solve);
* the class x mode energy table: the share of class c's mean observable in mode r,
  |b_{c,r}|^2 / sum_r |b_{c,r}|^2 (columns of V have unit norm, so |b_r|^2 is the mode's energy);
* how well each mode separates classes: eta^2 = between-class / total variance of its coordinate;
* for each class, the modes where its samples carry the most energy relative to the other classes
  (mean |b_r|^2 over the class / mean over the rest): what the spectral edit suppresses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Spectrum:
    """Eigendecomposition of the generator G (modes ordered by |eigenvalue of K|, descending)."""

    mu: torch.Tensor  # [p] complex128: eigenvalues of G
    V: torch.Tensor  # [p, p] complex128: unit-norm eigenvectors (columns)
    k: int

    @property
    def eig_K(self) -> torch.Tensor:
        return torch.exp(self.mu)

    @property
    def eig_A(self) -> torch.Tensor:
        return torch.exp(self.mu / self.k)

    def operator(self, eigvals: torch.Tensor | None = None) -> torch.Tensor:
        """V diag(eigvals) V^-1 (real part; default the eigenvalues of K): K itself, or an operator
        with some modes' eigenvalues changed (conjugate pairs changed together stay real)."""
        lam = self.eig_K if eigvals is None else eigvals.to(torch.complex128)
        return torch.linalg.solve(self.V.T, (self.V * lam).T).T.real

    def coordinates(self, z: torch.Tensor) -> torch.Tensor:
        """Modal coordinates b = V^-1 z of observables ``z`` (rows) -> [n, p] complex."""
        return torch.linalg.solve(self.V, z.to(torch.complex128).T).T

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Real tensors for safetensors (which has no complex dtype)."""
        return {
            "mu_real": self.mu.real.contiguous(),
            "mu_imag": self.mu.imag.contiguous(),
            "V_real": self.V.real.contiguous(),
            "V_imag": self.V.imag.contiguous(),
            "k": torch.tensor(self.k),
        }

    @classmethod
    def from_state_dict(cls, s: dict[str, torch.Tensor]) -> Spectrum:
        return cls(torch.complex(s["mu_real"], s["mu_imag"]), torch.complex(s["V_real"], s["V_imag"]), int(s["k"]))


def decompose(G: torch.Tensor, k: int) -> Spectrum:
    """Eigendecomposition of the generator ``G`` (K = exp(G), A = exp(G/k))."""
    mu, V = torch.linalg.eig(G.detach().double())
    order = torch.argsort(mu.real, descending=True, stable=True)  # |exp(mu)| = exp(Re mu)
    return Spectrum(mu[order], V[:, order], k)


def effective_rank(M: torch.Tensor) -> float:
    """exp(H(s / sum s)) of the singular values s of M (Roy & Vetterli 2007), in [1, rank M]."""
    s = torch.linalg.svdvals(M.double())
    p = s / s.sum()
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum()).item()


def class_mode_energy(spec: Spectrum, z: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[C, p]: share of class c's mean observable in each mode (rows sum to 1)."""
    means = torch.stack([z[labels == c].double().mean(0) for c in range(num_classes)])
    energy = spec.coordinates(means).abs() ** 2
    return energy / energy.sum(1, keepdim=True)


def mode_separation(b: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[p]: eta^2 of each mode's coordinate, between-class variance / total variance, in [0, 1]."""
    centred = b - b.mean(0)
    total = (centred.abs() ** 2).sum(0)
    between = torch.zeros(b.shape[1], dtype=torch.float64)
    for c in range(num_classes):
        m = labels == c
        if m.any():
            between += m.sum() * (centred[m].mean(0).abs() ** 2)
    return between / total.clamp_min(1e-300)


def class_mode_specificity(b: torch.Tensor, labels: torch.Tensor, classes) -> torch.Tensor:
    """[p]: mean modal energy |b_r|^2 of the samples of ``classes`` over that of the other samples."""
    mask = torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype))
    energy = b.abs() ** 2
    return energy[mask].mean(0) / energy[~mask].mean(0).clamp_min(1e-300)
