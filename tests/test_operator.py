"""K = exp(G/k)^k (Eq. 12): values and gradients of kaelab's expm against torch.linalg.matrix_exp."""

import pytest
import torch

from kaelab.errors import ConfigError
from kaelab.koopman.operator import KoopmanOperator, expm


@pytest.mark.parametrize("scale", [0.0, 0.1, 1.0, 5.0, 40.0])
def test_expm_matches_torch(scale):
    """Normwise relative error (the measure a matrix function's accuracy is stated in; entries of
    exp(A) at ||A|| = 40 span 15 orders of magnitude, so an entrywise rtol judges cancellation in the
    small ones). Catches a skipped squaring, a wrong Pade/Taylor degree or a wrong scaling."""
    g = torch.Generator().manual_seed(0)
    a = scale * torch.randn(30, 30, dtype=torch.float64, generator=g) / 30**0.5
    want = torch.linalg.matrix_exp(a)
    assert (torch.linalg.matrix_norm(expm(a) - want) / torch.linalg.matrix_norm(want)).item() < 1e-12


def test_expm_gradient_matches_torch():
    g = torch.Generator().manual_seed(1)
    a = (
        torch.eye(12, dtype=torch.float64) + 2 * torch.randn(12, 12, dtype=torch.float64, generator=g)
    ).requires_grad_()
    w = torch.randn(12, 12, dtype=torch.float64, generator=g)
    (ours,) = torch.autograd.grad((expm(a) * w).sum(), a)
    (ref,) = torch.autograd.grad((torch.linalg.matrix_exp(a) * w).sum(), a)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    assert torch.autograd.gradcheck(expm, (a[:5, :5].detach().clone().requires_grad_(),))


def test_k_step_power_equals_one_exponential():
    op = KoopmanOperator(16, k=10, init="identity_random").double()
    with torch.no_grad():
        op.G.add_(0.3 * torch.randn(16, 16, dtype=torch.float64))
    a = op.step_matrix()
    torch.testing.assert_close(torch.linalg.matrix_power(a, 10), torch.linalg.matrix_exp(op.G), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(op.matrix(), torch.linalg.matrix_exp(op.G), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(op.inverse_matrix() @ op.matrix(), torch.eye(16, dtype=torch.float64))


def test_trajectory_has_k_plus_one_states_ending_at_prediction():
    op = KoopmanOperator(8, k=7, init="identity_random")
    z = torch.randn(5, 8)
    traj = op.trajectory(z)
    assert traj.shape == (8, 5, 8)
    torch.testing.assert_close(traj[0], z)
    torch.testing.assert_close(traj[-1], op(z), rtol=1e-4, atol=1e-5)


def test_identity_init_gives_e_times_identity():
    op = KoopmanOperator(4, k=100)
    torch.testing.assert_close(op.matrix(), torch.e * torch.eye(4))


def test_bad_operator_settings():
    with pytest.raises(ConfigError, match="k"):
        KoopmanOperator(4, k=0)
    with pytest.raises(ConfigError, match="g_init"):
        KoopmanOperator(4, k=2, init="nope")


@pytest.mark.parametrize("scale", [0.5, 3.0, 30.0])
def test_expm_float32_accuracy(scale):
    g = torch.Generator().manual_seed(2)
    a = torch.eye(200) + scale * torch.randn(200, 200, generator=g) / 200**0.5
    ref = torch.linalg.matrix_exp(a.double())
    assert ((expm(a).double() - ref).norm() / ref.norm()).item() < 1e-4


def test_expm_huge_norm_fallback():
    a = torch.tensor([[0.0, 1e9], [0.0, 0.0]], dtype=torch.float64)  # nilpotent: exp(a) = I + a
    torch.testing.assert_close(expm(a), torch.eye(2, dtype=torch.float64) + a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_operators_take_the_degree_8_polynomial_at_degree_12_accuracy(dtype):
    """A small X (alpha_3 <= theta_8), such as the one-step A = exp(G/k) of a trained KAE, gets the
    degree-8 Taylor polynomial: 4 products (X^2, X^3, X^4 and one more) instead of 5 + 1, with the
    same error bound. Just above theta_8 the degree-12 branch runs again."""
    from unittest.mock import patch

    from kaelab.koopman.operator import _THETA8, expm_squarings

    g = torch.Generator().manual_seed(4)
    x = torch.randn(40, 40, dtype=torch.float64, generator=g)
    x = x / x.abs().sum(0).max()  # 1-norm 1, so alpha_3 <= scale
    real = torch.Tensor.__matmul__
    for scale, products, tol in ((0.99 * _THETA8[dtype], 4, {torch.float32: 2e-7, torch.float64: 1e-14}[dtype]),
                                 (3.0, None, None)):  # fmt: skip
        a = (scale * x).to(dtype).requires_grad_()
        products = products or 6 + expm_squarings(a)  # X^2..X^4, X^5 for alpha_4, 2 more, squarings
        count = []
        with patch.object(torch.Tensor, "__matmul__", lambda u, v, count=count: count.append(1) or real(u, v)):
            got = expm(a)
        assert len(count) == products
        ref = torch.linalg.matrix_exp(a.detach().double())
        if tol is not None:
            assert ((got.detach().double() - ref).norm() / ref.norm()).item() < tol
    a = (0.5 * _THETA8[torch.float64] * x).requires_grad_()
    w = torch.randn(40, 40, dtype=torch.float64, generator=g)
    (ours,) = torch.autograd.grad((expm(a) * w).sum(), a)
    (ref,) = torch.autograd.grad((torch.linalg.matrix_exp(a) * w).sum(), a)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
