"""EMMET (Gupta et al. 2024, "A unified framework for model editing"): batched equality-constrained
editing of a linear map, here the KAE's square Koopman operator (KAE paper, Sec. 4.3 and App. D).

For W (z_out = W z_in), preserved keys K0 [p, P] (whose outputs W K0 must not move) and edit keys
K_E [p, E] with target outputs V_E [p, E], EMMET solves

    min_Delta ||Delta K0||_F^2 + mu ||Delta||_F^2   s.t.  (W + Delta) K_E = V_E,

whose closed form (with C0 = K0 K0^T + mu I and the residual R = V_E - W K_E) is

    Delta = R (K_E^T C0^-1 K_E + lambda I_E)^-1 K_E^T C0^-1                       (E x E form)

where lambda regularises the E x E system (lambda = 0: the constraints hold exactly when K_E has
full column rank, which needs E <= p). By the push-through identity the same Delta is

    Delta = R K_E^T (K_E K_E^T + lambda C0)^-1                                     (p x p form)

which needs only p x p matrices: used when E > p (thousands of edit keys), it keeps memory at
O(p^2 + E p) and the cost at one p x p Cholesky solve. Both forms are computed in float64 with
Cholesky solves (never an explicit inverse); a system that is singular or too ill-conditioned for
Cholesky falls back to a least-squares solve (``torch.linalg.lstsq``, gelsd), and the fallback is
reported in the returned info and logged.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from kaelab.errors import ConfigError

log = logging.getLogger(__name__)

# Cholesky of a matrix whose condition number exceeds this loses all float64 digits: use lstsq
MAX_COND = 1e13
FORMS = ("auto", "ExE", "pxp")  # the EMMET system solved: auto picks ExE when E <= p, else pxp


@dataclass
class EditInfo:
    """How an EMMET edit was solved (for metrics.json and the log)."""

    form: str  # "ExE" or "pxp"
    n_edit: int
    n_preserve: int
    cond: float  # condition number of the solved system (2-norm estimate from its eigenvalues)
    solver: str = "cholesky"  # cholesky | lstsq (fallback)
    fallback_reason: str | None = None
    notes: list[str] = field(default_factory=list)


def _spd_solve(a: torch.Tensor, b: torch.Tensor, what: str, info: EditInfo) -> torch.Tensor:
    """Solve a X = b for symmetric PSD ``a`` (Cholesky); fall back to least squares if ``a`` is
    singular or ill-conditioned, recording which and why in ``info``."""
    eig = torch.linalg.eigvalsh(a)
    lo, hi = eig[0].item(), eig[-1].item()
    info.cond = float("inf") if lo <= 0 else hi / lo
    reason = None
    if lo <= 0 or hi <= 0:
        reason = f"{what} is singular (smallest eigenvalue {lo:.3g})"
    elif info.cond > MAX_COND:
        reason = f"{what} is ill-conditioned (condition number {info.cond:.3g} > {MAX_COND:.0e})"
    else:
        chol, err = torch.linalg.cholesky_ex(a)
        if err.item() == 0:
            return torch.cholesky_solve(b, chol)
        reason = f"{what} is not positive definite to working precision (Cholesky failed at {err.item()})"
    info.solver, info.fallback_reason = "lstsq", reason
    log.warning("EMMET: %s; solving it by least squares (minimum-norm) instead of Cholesky", reason)
    return torch.linalg.lstsq(a, b, driver="gelsd").solution


def emmet(
    W: torch.Tensor,
    keys_edit: torch.Tensor,
    values_edit: torch.Tensor,
    keys_preserve: torch.Tensor | None,
    mu: float = 0.1,
    lam: float = 0.1,
    form: str = "auto",
    preserve_gram: torch.Tensor | None = None,
    n_preserve: int | None = None,
) -> tuple[torch.Tensor, EditInfo]:
    """Edited operator W' = W + Delta (same dtype as W) and how it was solved.

    Keys and values are columns: ``keys_edit`` [p, E], ``values_edit`` [p, E], ``keys_preserve``
    [p, P] (P may be 0 when mu > 0). The preserved keys enter only through K0 K0^T: instead of
    them, ``preserve_gram`` [p, p] may be given (with ``n_preserve``, their count, for the report;
    kaelab.editing.statistics keeps it per class). ``form``: ``auto`` (E x E when E <= p, else
    p x p), ``ExE`` or ``pxp``.
    (Gupta et al. 2024; the KAE paper's App. D and Algorithm 1, step 4.)

    Examples:
        >>> import torch, kaelab as kl
        >>> W = torch.eye(3, dtype=torch.float64)
        >>> k_edit, v_edit = torch.tensor([[1.0], [0.0], [0.0]]), torch.tensor([[0.0], [1.0], [0.0]])
        >>> W2, info = kl.emmet(W, k_edit, v_edit, torch.eye(3)[:, 1:], mu=1e-6, lam=0.0)
        >>> (W2 @ k_edit.double()).round(decimals=4).flatten().tolist(), info.form
        ([0.0, 1.0, 0.0], 'ExE')
    """
    _check_inputs(W, keys_edit, values_edit, keys_preserve, preserve_gram, mu, lam, form)
    p = W.shape[0]
    n_edit = keys_edit.shape[1]
    if form == "auto":
        form = "ExE" if n_edit <= p else "pxp"
    if keys_preserve is not None:
        n_preserve = keys_preserve.shape[1]
    info = EditInfo(form=form, n_edit=n_edit, n_preserve=int(n_preserve or 0), cond=float("nan"))

    W64, K_E, V_E = (t.to(torch.float64) for t in (W, keys_edit, values_edit))
    if preserve_gram is None:
        K0 = keys_preserve.to(torch.float64)
        C0 = K0 @ K0.T
    else:
        C0 = preserve_gram.to(torch.float64).clone()
    if mu:
        C0.diagonal().add_(mu)
    R = V_E - W64 @ K_E  # [p, E]
    delta = _delta_exe(R, K_E, C0, lam, info) if form == "ExE" else _delta_pxp(R, K_E, C0, lam, info)
    return (W64 + delta).to(W.dtype), info


def _check_inputs(W, keys_edit, values_edit, keys_preserve, preserve_gram, mu: float, lam: float, form: str) -> None:
    """One-line ConfigErrors for shapes, counts and settings EMMET cannot solve with."""
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ConfigError(f"EMMET edits a square operator, got shape {tuple(W.shape)}")
    p = W.shape[0]
    if (keys_preserve is None) == (preserve_gram is None):
        raise ConfigError("EMMET needs either keys_preserve or preserve_gram (K0 K0^T), not both")
    if preserve_gram is not None and preserve_gram.shape != (p, p):
        raise ConfigError(f"EMMET preserve_gram must be [{p}, {p}], got {tuple(preserve_gram.shape)}")
    given = (("keys_edit", keys_edit), ("values_edit", values_edit), ("keys_preserve", keys_preserve))
    for name, t in given:
        if t is None:
            continue
        if t.ndim != 2 or t.shape[0] != p:
            raise ConfigError(f"EMMET {name} must be [{p}, n] (columns are vectors), got {tuple(t.shape)}")
    if keys_edit.shape != values_edit.shape:
        raise ConfigError(f"EMMET needs one target per edit key, got {keys_edit.shape[1]} and {values_edit.shape[1]}")
    if keys_edit.shape[1] == 0:
        raise ConfigError("EMMET needs at least one edit key")
    if not (math.isfinite(mu) and math.isfinite(lam)) or mu < 0 or lam < 0:
        raise ConfigError(f"EMMET regularisers must be >= 0, got mu={mu}, lambda={lam}")
    if form not in FORMS:
        raise ConfigError(f"EMMET form must be auto, ExE or pxp, got {form!r}")


def _delta_exe(R: torch.Tensor, K_E: torch.Tensor, C0: torch.Tensor, lam: float, info: EditInfo) -> torch.Tensor:
    """Delta = R (K_E^T C0^-1 K_E + lam I)^-1 K_E^T C0^-1 (the E x E form)."""
    C0inv_KE = _spd_solve(C0, K_E, "C0 = K0 K0^T + mu I", info)  # [p, E]
    cond_c0 = info.cond
    A = K_E.T @ C0inv_KE  # [E, E]
    if lam:
        A.diagonal().add_(lam)
    X = _spd_solve(A, R.T, "K_E^T C0^-1 K_E + lambda I", info)  # [E, p] = A^-1 R^T
    info.notes.append(f"cond(C0)={cond_c0:.3g}")
    return X.T @ C0inv_KE.T  # R A^-1 K_E^T C0^-1 (C0 symmetric)


def _delta_pxp(R: torch.Tensor, K_E: torch.Tensor, C0: torch.Tensor, lam: float, info: EditInfo) -> torch.Tensor:
    """Delta = R K_E^T (K_E K_E^T + lam C0)^-1 (the p x p form, by the push-through identity)."""
    S = K_E @ K_E.T
    if lam:
        S = S + lam * C0
    return _spd_solve(S, (R @ K_E.T).T, "K_E K_E^T + lambda C0", info).T
