"""The KAE LightningModule: the four losses (Eqs. 3-7), k+1 intermediate states, config errors."""

import pytest
import torch

from kaelab.errors import ConfigError
from kaelab.koopman.kae import LOSS_TERMS, KoopmanAutoencoder, pairwise_distance_mse

ONES = dict.fromkeys(LOSS_TERMS, 1.0)


def _identity_kae(dim=4, k=5):
    """Linear encoder/decoder set to the identity: every loss is zero when x_j = K x_i."""
    kae = KoopmanAutoencoder(dim, [], dim, k, ONES).double()
    with torch.no_grad():
        for lin in (kae.encoder[0], kae.decoder[0]):
            lin.weight.copy_(torch.eye(dim))
            lin.bias.zero_()
        kae.koopman.G.copy_(
            0.3 * torch.randn(dim, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        )
    return kae


def test_losses_zero_when_they_must_be():
    kae = _identity_kae()
    x_i = torch.randn(32, 4, dtype=torch.float64)
    x_j = x_i @ torch.linalg.matrix_exp(kae.koopman.G).T
    terms = kae.loss_terms(x_i, x_j)
    for t in LOSS_TERMS:
        assert terms[t].item() == pytest.approx(0.0, abs=1e-12), t


def test_each_loss_positive_when_its_condition_breaks():
    kae = _identity_kae()
    x_i = torch.randn(32, 4, dtype=torch.float64)
    x_j = x_i @ torch.linalg.matrix_exp(kae.koopman.G).T
    # wrong targets: linear and state break; encoder/decoder still autoencode and are isometric
    terms = kae.loss_terms(x_i, x_j + 0.1 * torch.randn_like(x_j))
    assert terms["linear"] > 1e-4 and terms["state"] > 1e-4
    assert terms["recon"].item() == pytest.approx(0.0, abs=1e-12)
    assert terms["iso"].item() == pytest.approx(0.0, abs=1e-12)
    # a scaled encoder: no longer an isometry and no longer autoencoding
    with torch.no_grad():
        kae.encoder[0].weight.mul_(2.0)
    terms = kae.loss_terms(x_i, x_j)
    assert terms["iso"] > 1e-3 and terms["recon"] > 1e-3
    total = kae.total_loss(terms)
    assert total.item() == pytest.approx(sum(terms[t].item() for t in LOSS_TERMS))


def test_lambdas_weight_the_total():
    kae = KoopmanAutoencoder(6, [8], 5, 3, {"recon": 0.0, "linear": 2.0, "state": 0.0, "iso": 0.5})
    terms = kae.loss_terms(torch.randn(16, 6), torch.randn(16, 6))
    assert kae.total_loss(terms).item() == pytest.approx(
        2 * terms["linear"].item() + 0.5 * terms["iso"].item(), rel=1e-6
    )


@pytest.mark.parametrize("dim", [3, 100])  # the pdist and the cdist code paths
def test_pairwise_distance_mse_is_mean_over_distinct_pairs(dim):
    a, b = torch.randn(20, dim), torch.randn(20, dim)
    da, db = torch.cdist(a, a), torch.cdist(b, b)
    iu = torch.triu_indices(20, 20, 1)
    ref = ((da - db)[iu[0], iu[1]] ** 2).mean()
    assert pairwise_distance_mse(a, b).item() == pytest.approx(ref.item(), rel=1e-4)


def test_trajectory_k_plus_one_states_last_is_prediction():
    kae = KoopmanAutoencoder(10, [30], 20, 7, ONES, g_init="identity_random")
    x = torch.randn(9, 10)
    latents, decoded = kae.trajectory(x)
    assert latents.shape == (8, 9, 20) and decoded.shape == (8, 9, 10)
    torch.testing.assert_close(latents[0], kae.encoder(x).detach())
    torch.testing.assert_close(decoded[-1], kae(x).detach(), rtol=1e-4, atol=1e-5)


def test_architecture_mirrors_the_paper():
    kae = KoopmanAutoencoder(784, [1000], 800, 10, ONES)
    shapes = [tuple(m.weight.shape) for m in kae.encoder if isinstance(m, torch.nn.Linear)]
    assert shapes == [(1000, 784), (800, 1000)]
    shapes = [tuple(m.weight.shape) for m in kae.decoder if isinstance(m, torch.nn.Linear)]
    assert shapes == [(1000, 800), (784, 1000)]
    assert isinstance(kae.encoder[1], torch.nn.LeakyReLU) and isinstance(kae.encoder[-1], torch.nn.Linear)


def test_negative_lambda_rejected():
    with pytest.raises(ConfigError, match="lambdas.iso"):
        KoopmanAutoencoder(4, [], 4, 2, {**ONES, "iso": -1.0})
