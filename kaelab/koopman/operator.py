"""The Koopman operator K = exp(G/k)^k (KAE paper, Eq. 12).

exp(G/k)^k == exp(G), so the k-step prediction costs one matrix exponential per optimisation step
(not k matrix products per sample); only the analysis of the k-1 intermediate states uses powers
of the one-step operator A = exp(G/k).

Why a hand-written ``expm`` instead of ``torch.linalg.matrix_exp``: the forward values are the
same (both are scaling-and-squaring on a Taylor polynomial), but torch's backward evaluates the
Fréchet derivative as the exponential of a 2n x 2n block matrix, ~15x the forward cost (~0.8 s for
the MNIST KAE's 800x800 G on a 2-core CPU). Written in differentiable torch ops, autograd gives the
exact gradient of the same approximation for ~2x the forward's matmuls, which makes the operator's
gradient cheaper than the autoencoder's instead of dominating the step. ``tests/test_operator.py``
checks values and gradients against torch.linalg.matrix_exp.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kaelab.koopman.config import check_kae_values
from kaelab.precision import fp32

# Degree-12 Taylor polynomial; after scaling, alpha = max(||X^4||^(1/4), ||X^5||^(1/5)) <= theta
# bounds the truncation error by sum_{k>12} theta^k / k! (Al-Mohy & Higham 2009, Thm. 4.2 with
# p = 4): ~3e-8 for theta = 1.5 (below float32's unit roundoff 6e-8), ~2e-17 for theta = 0.3.
_THETA = {torch.float32: 1.5, torch.float64: 0.3}
# Degree 8 with the same error bound (sum_{k>8} theta^k / k! equal to degree 12's above), checked
# with alpha_3 = max(||X^3||^(1/3), ||X^4||^(1/4)) (Thm. 4.2 with p = 3: 9 >= 3 * 2), which needs no
# power beyond the X^4 both degrees compute. For a small X, e.g. the one-step A = exp(G/k) of a
# trained MNIST KAE (alpha_3 = 0.35), it takes 4 products instead of 5 + 1 (``tests/test_operator.py``).
_THETA8 = {torch.float32: 0.61, torch.float64: 0.059}
_INV_FACT = [1.0 / math.factorial(i) for i in range(13)]
_MAX_NORM_FOR_POWERS = 1e8  # beyond this A^5 could overflow float32: fall back to the 1-norm


def _norm1(x: torch.Tensor) -> float:
    return x.detach().abs().sum(dim=-2).max().item()


def _squarings(a: torch.Tensor, a4: torch.Tensor, norm1: float, theta: float) -> int:
    """Squarings s with alpha / 2^s <= theta, alpha = max(||A^4||^(1/4), ||A^5||^(1/5))."""
    if norm1 <= theta:
        return 0
    with torch.no_grad():
        alpha = max(_norm1(a4) ** 0.25, _norm1(a4 @ a) ** 0.2)
    return max(0, math.ceil(math.log2(alpha / theta)))


def expm_squarings(a: torch.Tensor) -> int:
    """The number of squarings ``expm(a)`` performs (for FLOP counts and diagnostics)."""
    theta, norm1 = _THETA.get(a.dtype, 1.5), _norm1(a)
    if norm1 > _MAX_NORM_FOR_POWERS:
        return math.ceil(math.log2(norm1 / theta))
    with torch.no_grad():
        a2 = a.detach() @ a.detach()
        return _squarings(a.detach(), a2 @ a2, norm1, theta)


def expm(a: torch.Tensor) -> torch.Tensor:
    """Matrix exponential by scaling and squaring of a degree-12 Taylor polynomial (autograd-able).

    The number of squarings s comes from alpha = max(||A^4||^(1/4), ||A^5||^(1/5)), which is often
    far below ||A||_1 for the dense, non-normal G of a KAE (e.g. 2.3 vs 28 for a trained MNIST G:
    2 squarings instead of 5). A^2, A^3, A^4 are computed once and reused, scaled, by the polynomial.
    A small A (alpha_3 <= theta_8, e.g. G/k) gets the degree-8 polynomial instead: one product fewer
    and no A^5.
    """
    n = a.shape[-1]
    theta = _THETA.get(a.dtype, 1.5)
    norm1 = _norm1(a)
    if norm1 > _MAX_NORM_FOR_POWERS:  # rare: scale first, squarings from the 1-norm
        s = math.ceil(math.log2(norm1 / theta))
        x = a / 2.0**s
        x2 = x @ x
        x3, x4 = x2 @ x, x2 @ x2
    else:
        a2 = a @ a
        a3, a4 = a2 @ a, a2 @ a2
        if max(_norm1(a3) ** (1 / 3), _norm1(a4) ** 0.25) <= _THETA8.get(a.dtype, 0.61):
            return _taylor8(a, a2, a3, a4)
        s = _squarings(a, a4, norm1, theta)
        x, x2, x3, x4 = (p / 2.0 ** (s * j) if s else p for j, p in enumerate((a, a2, a3, a4), start=1))
    eye = torch.eye(n, dtype=a.dtype, device=a.device)

    # Paterson-Stockmeyer: p(x) = B0 + x^4 (B1 + x^4 (B2 + x^4 / 12!)), B_i cubic in x.
    def block(i: int) -> torch.Tensor:
        c = _INV_FACT[4 * i : 4 * i + 4]
        return c[0] * eye + c[1] * x + c[2] * x2 + c[3] * x3

    p = block(0) + x4 @ (block(1) + x4 @ (block(2) + _INV_FACT[12] * x4))
    for _ in range(s):
        p = p @ p
    return p


def _taylor8(x, x2, x3, x4) -> torch.Tensor:
    """The degree-8 Taylor polynomial of exp(x) in one more product (Paterson-Stockmeyer):
    B0 + x^4 B1 with B0 = sum_{i<4} x^i / i!, B1 = sum_{i=4..8} x^(i-4) / i!."""
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    c = _INV_FACT
    b0 = c[0] * eye + c[1] * x + c[2] * x2 + c[3] * x3
    return b0 + x4 @ (c[4] * eye + c[5] * x + c[6] * x2 + c[7] * x3 + c[8] * x4)


def init_generator(dim: int, init: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Initial G: ``identity`` (the paper's, K = e I), ``zeros`` (K = I), ``random`` (N(0, 1/dim))
    or ``identity_random`` (I + N(0, 1/dim))."""
    check_kae_values(g_init=init)
    eye = torch.eye(dim)
    noise = torch.randn(dim, dim, generator=generator) / math.sqrt(dim)
    return {"identity": eye, "zeros": torch.zeros(dim, dim), "random": noise, "identity_random": eye + noise}[init]


def _gap_products(gaps) -> list[tuple[int, int, int]]:
    """Products (d, e, f), A^d = A^e A^f, that build A^d for every gap d from A and each other
    (ascending; one product when two powers already built sum to d, else halving), e.g. gaps
    {2, 3}: A^2 = A A, A^3 = A^2 A; gap 20: A^2, A^3, A^5, A^10, A^20."""
    have, plan = {1}, []

    def build(d: int) -> None:
        if d in have:
            return
        e = next((e for e in sorted(have, reverse=True) if d - e in have), None)
        if e is None:
            e = d // 2
            build(e)
            build(d - e)
        plan.append((d, e, d - e))
        have.add(d)

    for d in sorted(set(gaps)):
        build(d)
    return plan


class KoopmanOperator(nn.Module):
    """Linear dynamics z_{t+1} = A z_t in observable space with A = exp(G/k), K = A^k = exp(G)."""

    def __init__(self, dim: int, k: int, init: str = "identity"):
        super().__init__()
        check_kae_values(k=k)
        self.k = k
        self.G = nn.Parameter(init_generator(dim, init))

    def _generator(self) -> torch.Tensor:
        """G in fp32 at least: a bf16 / fp16 G is raised to fp32, a float64 one (an operator in
        double precision) is kept."""
        return self.G if self.G.dtype == torch.float64 else self.G.float()

    def matrix(self) -> torch.Tensor:
        """The k-step operator K = exp(G/k)^k = exp(G): one matrix exponential, in fp32 whatever the
        training precision (kaelab.precision)."""
        with fp32():
            return expm(self._generator())

    def step_matrix(self) -> torch.Tensor:
        """The one-step operator A = exp(G/k), in fp32."""
        with fp32():
            return expm(self._generator() / self.k)

    def forward(self, z: torch.Tensor, K: torch.Tensor | None = None) -> torch.Tensor:
        """Advance latents (rows of ``z``) by k steps: z K^T."""
        return z @ (self.matrix() if K is None else K).T

    def trajectory(self, z: torch.Tensor) -> torch.Tensor:
        """All k+1 latent states [z, A z, ..., A^k z] as a tensor [k+1, batch, dim]."""
        a_t = self.step_matrix().T
        states = [z]
        for _ in range(self.k):
            states.append(states[-1] @ a_t)
        return torch.stack(states)

    def powers(self, steps) -> list[torch.Tensor]:
        """A^t for each t of the increasing ``steps`` (differentiable): one matrix exponential for
        A = exp(G/k), then A^(t_l - t_{l-1}) by repeated squaring, chained. With k as the last step,
        the last power is K = A^k (equal to ``matrix()`` up to rounding), so the path loss's powers
        and K cost about one ``matrix()``."""
        A = self.step_matrix()
        out, prev, P = [], 0, None
        with fp32():
            for t in steps:
                D = torch.linalg.matrix_power(A, t - prev)
                P = D if P is None else D @ P
                out.append(P)
                prev = t
        return out

    def advance(self, z: torch.Tensor, steps, route: str | None = None) -> list[torch.Tensor]:
        """A^t z for each t of the increasing ``steps`` (rows of ``z``; differentiable), by the
        ``route`` that costs fewer flops (None: choose; the matrix exponential of A is common to both):

        * ``steps``: z pushed through A one step at a time (n p^2 per step of A);
        * ``gaps``: z pushed from one of ``steps`` to the next through A^d, d the gap between them,
          each distinct A^d built once (``_gap_products``: p^3 per product), then n p^2 per step.
          The MNIST KAE's path (800 x 800, steps 3, 5, 8, 10, batch 512) takes this route: A^2 and
          A^3, then 4 n p^2 instead of 10; so does the Yin-Yang KAE's (20 x 20, gaps of 20).

        Both are equal up to rounding (``KoopmanOperator.powers`` gives the matrices A^t themselves)."""
        steps = [int(t) for t in steps]
        gaps = [b - a for a, b in zip([0, *steps], steps, strict=False)]
        if not steps or min(gaps) < 1:
            raise ValueError(f"steps must increase strictly from 1, got {steps}")
        n, p = z.shape[0], z.shape[1]
        plan = _gap_products(gaps)
        if route is None:  # ties (every gap 1) go to steps, the same products
            route = "gaps" if p * p * (p * len(plan) + n * len(steps)) < n * p * p * steps[-1] else "steps"
        if route not in ("steps", "gaps"):
            raise ValueError(f"route must be steps or gaps, got {route!r}")
        if route == "steps":
            plan, gaps = [], [1] * steps[-1]
        power = {1: self.step_matrix()}
        with fp32():  # the powers of A in fp32; applying them to z follows the training precision
            for d, e, f in plan:
                power[d] = power[e] @ power[f]
        out, t = [], 0
        for d in gaps:
            z = z @ power[d].T
            t += d
            if t in steps:
                out.append(z)
        return out

    def inverse_matrix(self) -> torch.Tensor:
        """K^-1 = exp(-G): always exists (used to find inputs of given outputs when editing)."""
        with fp32():
            return expm(-self._generator())
