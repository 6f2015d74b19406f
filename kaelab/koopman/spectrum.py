"""Spectral analysis of the KAE's operator K = exp(G) and its one-step A = exp(G/k) (KAE paper, Eq. 12;
its future work: "what does the operator's spectrum say about the network").

One eigendecomposition G = V diag(mu) V^-1 (float64, LAPACK geev through torch.linalg.eig) gives
both operators: K = V diag(exp(mu)) V^-1 and A = V diag(exp(mu / k)) V^-1, so eigenvalues of K are
exp(mu) and of A exp(mu / k), with the same eigenvectors (the modes). From it:

* spectral radii of K and A, how many eigenvalues lie outside the unit circle (growing modes);
* the 1-norm condition number of V, ||V||_1 ||V^-1||_1 (how far K is from normal; no SVD);
* effective rank of K (Roy & Vetterli 2007: exp of the entropy of its normalised singular values);
* modal coordinates b = V^-1 z of observables z (rows: B = Z V^-T, V^-1 computed once), reduced
  per class in chunks (``modal_stats``: counts, sums of b and of |b|^2) so that nothing of size
  n x p complex is held;
* the class x mode energy table: the share of class c's mean observable in mode r,
  |b_{c,r}|^2 / sum_r |b_{c,r}|^2 (columns of V have unit norm, so |b_r|^2 is the mode's energy);
* how well each mode separates classes: eta^2 = between-class / total variance of its coordinate;
* for each class, the modes where its samples carry the most energy relative to the other classes
  (the class's share of modal energy in mode r / the other samples' share): what the spectral edit
  suppresses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Spectrum:
    """Eigendecomposition of the generator G = V diag(mu) V^-1 (modes ordered by |eigenvalue of K|,
    descending): K = exp(G) = V diag(exp(mu)) V^-1 and A = exp(G/k) (Eq. 12) share the modes V.

    Examples:
        >>> import torch, kaelab as kl
        >>> spec = kl.decompose(torch.diag(torch.tensor([0.0, -1.0, -2.0])), k=10)
        >>> [round(v, 4) for v in spec.eig_K.abs().tolist()]
        [1.0, 0.3679, 0.1353]
        >>> G = torch.diag(torch.tensor([0.0, -1.0, -2.0], dtype=torch.float64))
        >>> torch.allclose(spec.operator(), torch.linalg.matrix_exp(G))
        True
    """

    mu: torch.Tensor  # [p] complex128: eigenvalues of G
    V: torch.Tensor  # [p, p] complex128: unit-norm eigenvectors (columns)
    k: int
    _inverse: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def inverse(self) -> torch.Tensor:
        """V^-1 (computed once): its rows give the modal coordinates."""
        if self._inverse is None:
            self._inverse = torch.linalg.inv(self.V)
        return self._inverse

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
        """Modal coordinates b = V^-1 z of real observables ``z`` (rows) -> [n, p] complex (two
        real matmuls with V^-1's real and imaginary parts)."""
        W, zd = self.inverse, z.double()
        return torch.complex(zd @ W.real.T, zd @ W.imag.T)

    def cond(self) -> float:
        """1-norm condition number of V, ||V||_1 ||V^-1||_1 (no SVD of a complex matrix; within a
        factor p of the 2-norm one): 1 for a normal K with orthonormal modes."""
        norm1 = lambda m: m.abs().sum(0).max().item()  # noqa: E731
        return norm1(self.V) * norm1(self.inverse)

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
    """Eigendecomposition of the generator ``G`` of K = exp(G/k)^k = exp(G) (Eq. 12), in float64.

    Examples:
        >>> import torch, kaelab as kl
        >>> spec = kl.decompose(torch.tensor([[0.0, -1.0], [1.0, 0.0]]), k=4)  # a rotation generator
        >>> spec.eig_K.abs().tolist(), [round(v, 4) for v in spec.mu.imag.tolist()]
        ([1.0, 1.0], [1.0, -1.0])
    """
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


@dataclass
class ModalStats:
    """Per class: sample count, sum of modal coordinates b and of modal energies |b|^2 ([C, p])."""

    count: torch.Tensor
    sum_b: torch.Tensor
    sum_e: torch.Tensor


def modal_stats(spec: Spectrum, z: torch.Tensor, labels: torch.Tensor, num_classes: int, chunk: int = 8192):
    """ModalStats of observables ``z`` in chunks (memory O(chunk p), not O(n p) complex)."""
    p = spec.V.shape[0]
    count = torch.zeros(num_classes, dtype=torch.float64)
    sum_b = torch.zeros(num_classes, p, dtype=torch.complex128)
    sum_e = torch.zeros(num_classes, p, dtype=torch.float64)
    for zc, yc in zip(z.split(chunk), labels.split(chunk), strict=True):
        b = spec.coordinates(zc)
        onehot = torch.nn.functional.one_hot(yc.long(), num_classes).double()
        count += onehot.sum(0)
        sum_b += onehot.to(torch.complex128).T @ b
        sum_e += onehot.T @ (b.abs() ** 2)
    return ModalStats(count, sum_b, sum_e)


def mode_separation(stats: ModalStats) -> torch.Tensor:
    """[p]: eta^2 of each mode's coordinate, between-class variance / total variance, in [0, 1]."""
    n = stats.count.sum()
    mean = stats.sum_b.sum(0) / n
    total = stats.sum_e.sum(0) / n - mean.abs() ** 2
    present = stats.count > 0
    means = stats.sum_b[present] / stats.count[present, None]
    between = (stats.count[present, None] * (means - mean).abs() ** 2).sum(0) / n
    return between / total.clamp_min(1e-300)


def class_mode_specificity(stats: ModalStats, classes) -> torch.Tensor:
    """[p]: the share of the modal energy |b|^2 of the samples of ``classes`` that lies in mode r,
    over the same share for the other samples (a ratio of shares, so that a class whose observables
    are smaller overall is not ranked below the others in every mode)."""
    mask = torch.zeros(len(stats.count), dtype=torch.bool)
    mask[list(classes)] = True
    inside, outside = stats.sum_e[mask].sum(0), stats.sum_e[~mask].sum(0)
    return (inside / inside.sum()) / (outside / outside.sum()).clamp_min(1e-300)
