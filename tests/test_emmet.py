"""EMMET's closed form on small random operators: exact constraints, minimal disturbance of the
preserved keys (against a generic constrained least-squares solve), low-rank update, both forms."""

import numpy as np
import pytest
import torch

from kaelab.editing.emmet import emmet
from kaelab.errors import ConfigError


def _problem(p=12, E=4, P=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(p, p, generator=g, dtype=torch.float64)
    K_E = torch.randn(p, E, generator=g, dtype=torch.float64)
    V_E = torch.randn(p, E, generator=g, dtype=torch.float64)
    K0 = torch.randn(p, P, generator=g, dtype=torch.float64)
    return W, K_E, V_E, K0


def test_constraints_met_exactly_with_lambda_zero():
    W, K_E, V_E, K0 = _problem()
    W2, info = emmet(W, K_E, V_E, K0, mu=0.1, lam=0.0)
    assert info.form == "ExE" and info.solver == "cholesky"
    torch.testing.assert_close(W2 @ K_E, V_E, atol=1e-9, rtol=0)


def test_preserved_keys_disturbed_minimally_against_generic_solver():
    """min ||D K0||^2 + mu ||D||^2 s.t. (W + D) K_E = V_E, solved row by row as an equality-
    constrained least-squares problem through its KKT system with numpy: EMMET must agree."""
    W, K_E, V_E, K0 = _problem()
    mu = 0.1
    W2, _ = emmet(W, K_E, V_E, K0, mu=mu, lam=0.0)
    p, E = K_E.shape
    C = (K0 @ K0.T + mu * torch.eye(p)).numpy()
    R = (V_E - W @ K_E).numpy()
    kkt = np.block([[2 * C, K_E.numpy()], [K_E.numpy().T, np.zeros((E, E))]])
    rows = []
    for r in range(p):  # each row d of D: min d C d^T s.t. d K_E = R[r]
        sol = np.linalg.solve(kkt, np.concatenate([np.zeros(p), R[r]]))
        rows.append(sol[:p])
    np.testing.assert_allclose((W2 - W).numpy(), np.array(rows), atol=1e-9)
    # and any other feasible update disturbs the preserved keys more
    D_other = torch.from_numpy(np.array(rows)) + torch.randn(p, p, dtype=torch.float64) @ (
        torch.eye(p, dtype=torch.float64) - K_E @ torch.linalg.pinv(K_E)
    )
    assert torch.allclose((W + D_other) @ K_E, V_E, atol=1e-8)
    assert (D_other @ K0).norm() > ((W2 - W) @ K0).norm()


def test_update_rank_at_most_number_of_edits():
    W, K_E, V_E, K0 = _problem(p=16, E=3)
    W2, _ = emmet(W, K_E, V_E, K0, mu=0.1, lam=0.1)
    assert torch.linalg.matrix_rank(W2 - W, atol=1e-9).item() <= 3


def test_pxp_form_equals_exe_form_when_both_apply():
    """The push-through identity: R (K_E^T C0^-1 K_E + lam I)^-1 K_E^T C0^-1 == R K_E^T (K_E K_E^T + lam C0)^-1."""
    W, K_E, V_E, K0 = _problem(p=10, E=6)
    a, ia = emmet(W, K_E, V_E, K0, mu=0.2, lam=0.3, form="ExE")
    b, ib = emmet(W, K_E, V_E, K0, mu=0.2, lam=0.3, form="pxp")
    assert (ia.form, ib.form) == ("ExE", "pxp")
    torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


def test_many_keys_use_pxp_and_move_edit_outputs_towards_targets():
    W, K_E, V_E, K0 = _problem(p=8, E=200, P=400)
    W2, info = emmet(W, K_E, V_E, K0, mu=0.1, lam=0.1)
    assert info.form == "pxp"
    # the least-squares compromise: closer to the targets than before, preserved outputs moved less
    assert (W2 @ K_E - V_E).norm() < (W @ K_E - V_E).norm()


def test_float32_operator_computed_in_float64_and_returned_as_float32():
    W, K_E, V_E, K0 = (t.float() for t in _problem())
    W2, _ = emmet(W, K_E, V_E, K0, mu=0.1, lam=0.0)
    assert W2.dtype == torch.float32
    torch.testing.assert_close(W2.double() @ K_E.double(), V_E.double(), atol=1e-5, rtol=0)


def test_singular_system_falls_back_to_least_squares_and_says_so(caplog):
    W, K_E, V_E, K0 = _problem(p=6, E=2, P=3)
    K_E = torch.cat([K_E[:, :1], K_E[:, :1]], dim=1)  # two identical keys: the ExE system is singular
    V_E = torch.cat([V_E[:, :1], V_E[:, :1]], dim=1)
    W2, info = emmet(W, K_E, V_E, K0, mu=0.1, lam=0.0)
    assert info.solver == "lstsq" and "singular" in info.fallback_reason
    assert "least squares" in caplog.text
    torch.testing.assert_close(W2 @ K_E, V_E, atol=1e-8, rtol=0)  # consistent constraints still met


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(mu=-1.0), "regularisers"),
        (dict(form="bad"), "form"),
    ],
)
def test_bad_arguments(kwargs, match):
    W, K_E, V_E, K0 = _problem()
    with pytest.raises(ConfigError, match=match):
        emmet(W, K_E, V_E, K0, **kwargs)


def test_bad_shapes():
    W, K_E, V_E, K0 = _problem()
    with pytest.raises(ConfigError, match="square"):
        emmet(W[:, :3], K_E, V_E, K0)
    with pytest.raises(ConfigError, match="one target per edit key"):
        emmet(W, K_E, V_E[:, :2], K0)
    with pytest.raises(ConfigError, match="at least one"):
        emmet(W, K_E[:, :0], V_E[:, :0], K0)


def test_the_preserved_keys_gram_gives_the_same_edit_as_the_keys():
    """emmet(..., preserve_gram=K0 K0^T) is emmet(..., K0): the keys enter only through their Gram."""
    W, K_E, V_E, K0 = _problem(p=12, E=30, P=50)
    a, ia = emmet(W, K_E, V_E, K0, mu=0.1, lam=0.1)
    b, ib = emmet(W, K_E, V_E, None, mu=0.1, lam=0.1, preserve_gram=K0 @ K0.T, n_preserve=50)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert ia.n_preserve == ib.n_preserve == 50
    with pytest.raises(ConfigError, match="either keys_preserve or preserve_gram"):
        emmet(W, K_E, V_E, K0, preserve_gram=K0 @ K0.T)
