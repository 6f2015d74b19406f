"""DMD on delay coordinates and the explicit linear operator it defines (Koopman layers paper, Sec. 3).

PyDMD's ``DMD(svd_rank=r).fit(X, Y)`` on paired snapshots (columns ``x_i -> y_i``) computes the
truncated SVD ``X ~ U S V^T`` and the reduced operator ``A~ = U^T Y V S^-1`` (r x r), whose
eigenvalues are the DMD eigenvalues. The projected (``exact=False``) full operator is
``A = U A~ U^T``; we keep it in that low-rank form and apply it batched in torch, stepped by a
rollout (kaelab/dmd/rollout.py: ``reduced``, ``shift`` or the user's own ``_target_``).

Since every step is linear, the hybrid network composes the steps of its span once into one
``[(h+1)D, D]`` matrix (``DelayOperator.propagator``) and applies that; the stepwise rollout
remains for diagnostics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydmd.dmdoperator import DMDOperator
from safetensors import safe_open
from safetensors.torch import save_file
from threadpoolctl import threadpool_limits
from torch import nn

from kaelab.dmd.config import DMDConfig, check_rank
from kaelab.dmd.delay import paired_snapshots
from kaelab.dmd.rollout import build_rollout
from kaelab.errors import ConfigError

log = logging.getLogger(__name__)

# States are float32 network activations: singular values below this fraction of the largest are
# round-off (or zero padding), and inverting them in A~ = U^T Y V S^-1 would only amplify noise.
RANK_RTOL = 1e-6


class DelayOperator(nn.Module):
    """``A = U A~ U^T`` on delay vectors of ``h + 1`` states of width ``state_dim``."""

    def __init__(self, U: torch.Tensor, Atilde: torch.Tensor, h: int, state_dim: int, eigs: np.ndarray):
        super().__init__()
        if U.shape[0] != (h + 1) * state_dim or U.shape[1] != Atilde.shape[0]:
            raise ValueError(f"inconsistent shapes U {tuple(U.shape)}, A~ {tuple(Atilde.shape)}, h={h}")
        self.h, self.state_dim = h, state_dim
        self.register_buffer("U", U)
        self.register_buffer("Atilde", Atilde)
        # newest-state predictor of the shift rollout, built once: s_{t+1} = z_t @ M^T
        self.register_buffer("M", U[-state_dim:] @ Atilde @ U.T)
        self.eigs = eigs  # DMD eigenvalues (eigenvalues of A~), complex numpy array

    @property
    def rank(self) -> int:
        return int(self.Atilde.shape[0])

    def save(self, path, **meta: int) -> None:
        """The fitted operator as safetensors (U, A~, eigenvalues as real and imaginary parts; h,
        state width and ``meta`` in the header): reloadable with ``load`` without refitting."""
        eigs = np.asarray(self.eigs)
        tensors = {
            "U": self.U.contiguous(),
            "Atilde": self.Atilde.contiguous(),
            "eigs_real": torch.from_numpy(np.array(eigs.real, dtype=np.float64)),
            "eigs_imag": torch.from_numpy(np.array(eigs.imag, dtype=np.float64)),
        }
        header = {"h": str(self.h), "state_dim": str(self.state_dim), **{k: str(v) for k, v in meta.items()}}
        save_file(tensors, str(path), metadata=header)

    @classmethod
    def load(cls, path) -> tuple[DelayOperator, dict[str, int]]:
        """(operator, the integer metadata it was saved with) from ``save``'s file."""
        with safe_open(str(path), framework="pt") as f:
            meta = {k: int(v) for k, v in (f.metadata() or {}).items()}
            t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        eigs = t["eigs_real"].numpy() + 1j * t["eigs_imag"].numpy()
        return cls(t["U"], t["Atilde"], meta["h"], meta["state_dim"], eigs), meta

    def matrix(self) -> torch.Tensor:
        """The dense ``(h+1)D x (h+1)D`` operator (for tests and inspection; rollouts never build it)."""
        return self.U @ self.Atilde @ self.U.T

    def spectral_radius(self) -> float:
        return float(np.abs(self.eigs).max()) if len(self.eigs) else 0.0

    def rollout(
        self, z: torch.Tensor, steps: int, mode: Any = DMDConfig.rollout, all_states: bool = False
    ) -> torch.Tensor:
        """Predict ``steps`` states after the delay vector ``z`` ([B, (h+1)D]) with the rollout
        ``mode`` (a built-in name, a ``_target_`` config or a built rollout: kaelab/dmd/rollout.py).

        Returns the last predicted state ``[B, D]`` or, with ``all_states``, ``[B, steps, D]``.
        """
        if steps < 1:
            raise ValueError(f"rollout needs steps >= 1, got {steps}")
        rollout = build_rollout(mode)
        out = rollout(self, z.to(self.U.dtype), steps, all_states)
        shape = (len(z), steps, self.state_dim) if all_states else (len(z), self.state_dim)
        if tuple(getattr(out, "shape", ())) != shape:
            raise ConfigError(
                f"dmd.rollout: {type(rollout).__qualname__} returned {tuple(getattr(out, 'shape', ()))} "
                f"for {steps} steps of {len(z)} delay vectors, expected {shape}"
            )
        return out

    def propagator(self, steps: int, mode: Any = DMDConfig.rollout) -> torch.Tensor:
        """The ``[(h+1)D, D]`` matrix P with ``rollout(z, steps, mode) == z @ P`` for every z.

        The rollout is linear in z, so rolling out the identity once gives its matrix; the hybrid
        then applies the whole span as one batched matmul (the same numbers as stepping, up to
        float rounding, at a fraction of the cost for a batch larger than (h+1)D).
        """
        eye = torch.eye(self.U.shape[0], dtype=self.U.dtype, device=self.U.device)
        return self.rollout(eye, steps, mode)


@dataclass
class DMDFit:
    operator: DelayOperator
    fit_time_s: float
    singular_values: np.ndarray  # of the delay snapshot matrix X (all of them, before truncation)
    n_pairs: int


def singular_values(X: torch.Tensor) -> np.ndarray:
    """Singular values of ``X`` (float64), descending, from the eigenvalues of the smaller Gram matrix.

    Hand-written rather than ``svdvals``: the snapshot matrix is tall (many pairs, (h+1)D columns),
    and the Gram route is several times faster; its precision (~1e-8 of the largest singular value
    in float64) is far below RANK_RTOL, the only place the small values are used.
    """
    G = X.T @ X if X.shape[0] >= X.shape[1] else X @ X.T
    return torch.linalg.eigvalsh(G).clamp_min(0).sqrt().flip(0).numpy()


def _blas_threads(n: int):
    """Cap numpy's BLAS threads (the SVD / eig of the fit) at torch's thread count, so that
    ``trainer.num_threads`` bounds the whole fit: on a loaded machine, BLAS threads beyond the free
    cores spin-wait and a fit slows down by 10-60x (measured on a 2-core machine)."""
    return threadpool_limits(limits=n, user_api="blas")


def resolve_rank(rank: int, singular_values: np.ndarray) -> int:
    """Rank actually used: ``rank`` (> 0) or all (-1), capped at the numerical rank of X."""
    check_rank(rank)
    s = singular_values
    numerical = int((s > s[0] * RANK_RTOL).sum()) if len(s) and s[0] > 0 else 0
    if numerical == 0:
        raise ConfigError("the DMD snapshot matrix is zero: the replaced span has constant zero states")
    return numerical if rank == -1 else min(rank, numerical)


def tls_project(X: np.ndarray, Y: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Total-least-squares denoising of snapshot pairs (columns X -> Y): both projected onto the
    leading ``rank`` right singular vectors V_r of [X; Y], as PyDMD's ``compute_tlsq``.

    Hand-written because PyDMD forms the N x N projector V_r^T V_r, N the number of pairs: 20 GB
    for Yin-Yang's 50,000 delay pairs (the process was killed for memory). (X V_r^T) V_r gives the
    same matrices in O((F + r) N) memory (``tests/test_dmd_estimator.py`` compares the two).
    """
    Vt = np.linalg.svd(np.vstack([X, Y]), full_matrices=False)[2][: min(rank, X.shape[0] + Y.shape[0])]
    return (X @ Vt.conj().T) @ Vt, (Y @ Vt.conj().T) @ Vt


def estimator_operator(estimator: Any, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U, A~, eigenvalues) of a PyDMD-style estimator fitted on snapshot pairs (columns X -> Y).

    Any estimator whose ``fit(X, Y)`` fits the pairs and then exposes its projection basis
    (``_svd_modes``, as PyDMD's ``DMD``) and reduced operator (``operator``, a DMDOperator) works,
    e.g. ``pydmd.DMD`` with ``tlsq_rank`` (total-least-squares DMD, debiased for noise in X).
    Not offered: PyDMD's ``FbDMD``, whose reduced operator multiplies the forward operator (in X's
    POD basis) by the inverse of the backward one (in Y's basis); on kaelab's pairs the two bases
    differ and it misses even a noiseless 4-d linear system by 0.04 (tests/test_dmd_estimator.py's
    system). Estimators that fit one time series (BOPDMD's ``fit(X, t)``, CDMD, RDMD) cannot take
    kaelab's per-sample pairs without pairing across samples.
    """
    name = type(estimator).__name__
    if not callable(getattr(estimator, "fit", None)):
        raise ConfigError(f"dmd.estimator: {name} has no fit(X, Y)")
    try:
        estimator.fit(X, Y)
    except Exception as err:  # e.g. an estimator whose fit takes (X, t), not snapshot pairs
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"dmd.estimator: {name}.fit(X, Y) on snapshot pairs failed ({first})") from None
    U, op = getattr(estimator, "_svd_modes", None), getattr(estimator, "operator", None)
    if U is None or op is None or not hasattr(op, "as_numpy_array"):
        raise ConfigError(
            f"dmd.estimator: {name} exposes no projection basis and reduced operator after fit(X, Y) "
            "(kaelab needs a snapshot-pair estimator like pydmd.DMD or pydmd.FbDMD)"
        )
    return np.asarray(U), np.asarray(op.as_numpy_array), np.asarray(op.eigenvalues)


def projected_dmd(X: np.ndarray, Y: np.ndarray, rank: int, tikhonov: float | None) -> tuple[np.ndarray, ...]:
    """(U, A~, eigenvalues) of kaelab's projected DMD on snapshot pairs (columns X -> Y).

    PyDMD's DMDOperator is the part of DMD.fit that computes the operator: the truncated SVD of X
    and A~ = U^T Y V S^-1 with its eigenvalues. Used directly, it skips what DMD.fit adds around
    it and the operator never uses: Snapshots' np.linalg.cond warnings (three more full SVDs, 90%
    of the fit time on MNIST-sized snapshots) and the amplitudes of a single time series.
    """
    op = DMDOperator(
        svd_rank=rank,
        exact=False,
        forward_backward=False,
        rescale_mode=None,
        sorted_eigs=False,
        tikhonov_regularization=tikhonov,
    )
    U, _, _ = op.compute_operator(X, Y)
    return U, np.asarray(op.as_numpy_array), np.asarray(op.eigenvalues)


def tls_rank(estimator: Mapping[str, Any], rank: int, svals: np.ndarray) -> int:
    """The estimator's ``tlsq_rank`` (0: no total-least-squares projection; -1: ``rank``, the
    resolved rank of the fit, as ``dmd.rank=-1``)."""
    tlsq = int(estimator.get("tlsq_rank") or 0)
    if tlsq != -1:
        return tlsq
    if rank >= int((svals > svals[0] * RANK_RTOL).sum()):
        log.warning(
            "dmd.estimator: total-least-squares DMD at the full numerical rank (%d) of the delay snapshots lost "
            "the dynamics on the MNIST ResMLP's blocks (test accuracy 0.10, against 0.99 at rank 256); a dmd.rank "
            "below it is safer",
            rank,
        )
    return rank


def configured_dmd(
    estimator: Mapping[str, Any], X: np.ndarray, Y: np.ndarray, rank: int, svals: np.ndarray
) -> tuple[np.ndarray, ...]:
    """(U, A~, eigenvalues) of the ``_target_`` estimator built with ``svd_rank=rank``; with a
    ``tlsq_rank``, kaelab projects the pairs (``tls_project``) and the estimator fits those."""
    from kaelab.instantiate import instantiate

    tlsq = tls_rank(estimator, rank, svals)
    extra = {"svd_rank": rank, **({"tlsq_rank": 0} if tlsq else {})}
    est = instantiate(estimator, "dmd.estimator", **extra)
    if tlsq:
        X, Y = tls_project(X, Y, tlsq)
    return estimator_operator(est, X, Y)


def fit_delay_dmd(
    S: torch.Tensor,
    h: int = DMDConfig.h,
    rank: int = DMDConfig.rank,
    dtype: torch.dtype = torch.float32,
    tikhonov: float | None = DMDConfig.tikhonov,
    svals: np.ndarray | None = None,
    estimator: Mapping[str, Any] | None = DMDConfig.estimator,
) -> DMDFit:
    """Fit DMD on paired delay snapshots of trajectories ``S = [N, T + 1, D]`` (float64 numerics):
    the linear operator of the Koopman layers paper (Method Summary) on ``delay_embed`` coordinates.

    ``svals``: the singular values of the snapshot matrix X if already known (``singular_values``).
    ``estimator``: a ``_target_`` config of another estimator (``configured_dmd``), built with
    ``svd_rank`` set to the resolved rank (and ``tlsq_rank: -1`` to it too); None: kaelab's
    projected DMD (``projected_dmd``, with ``tikhonov``).

    Examples:
        >>> import torch, kaelab as kl
        >>> A = torch.tensor([[0.9, -0.2], [0.2, 0.9]])
        >>> x0 = torch.randn(50, 2)
        >>> S = torch.stack([x0 @ torch.linalg.matrix_power(A, t).T for t in range(4)], dim=1)  # [50, 4, 2]
        >>> fit = kl.fit_delay_dmd(S, h=0, rank=-1)
        >>> round(fit.operator.spectral_radius(), 4)  # |eigenvalues of A| = sqrt(0.9^2 + 0.2^2)
        0.922
    """
    t0 = time.perf_counter()
    X, Y = paired_snapshots(S.double(), h)
    svals = singular_values(X) if svals is None else svals
    r = resolve_rank(rank, svals)
    Xn, Yn = X.T.contiguous().numpy(), Y.T.contiguous().numpy()  # PyDMD: one snapshot per column
    with _blas_threads(torch.get_num_threads()):
        if estimator is None:
            U, Atilde, eigs = projected_dmd(Xn, Yn, r, tikhonov)
        else:
            U, Atilde, eigs = configured_dmd(estimator, Xn, Yn, r, svals)
    real = (torch.from_numpy(np.real(m)).to(dtype) for m in (U, Atilde))
    op = DelayOperator(*real, h=h, state_dim=S.shape[-1], eigs=np.asarray(eigs))
    return DMDFit(op, time.perf_counter() - t0, svals, n_pairs=X.shape[0])
