"""The KAE's reconstruction term and its matrix exponential against hand computations.

Wrong implementations these catch: ``recon_reduction=mean`` adding the two reconstruction errors
(doubling lambda_recon) instead of averaging them (Eq. 3 as the reference's ``.mean()``); the
degree-8 Taylor polynomial of ``expm`` with a wrong coefficient (invisible at the small norms of a
one-step operator unless checked to float32 precision near the degree's limit).
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.functional import mse_loss

from kaelab.koopman.kae import KoopmanAutoencoder
from kaelab.koopman.operator import expm


@pytest.mark.parametrize("reduction, weight", [("mean", 0.5), ("sum", 1.0)])
def test_reconstruction_term_averages_or_adds_the_two_sides(reduction, weight):
    torch.manual_seed(0)
    kae = KoopmanAutoencoder(3, [5], 4, 6, recon_reduction=reduction).eval()
    x_i, x_j = torch.randn(40, 3), torch.randn(40, 3)
    with torch.no_grad():
        terms = kae.loss_terms(x_i, x_j)
        want = weight * (mse_loss(kae.decoder(kae.encoder(x_i)), x_i) + mse_loss(kae.decoder(kae.encoder(x_j)), x_j))
    assert terms["recon"].item() == pytest.approx(want.item(), rel=1e-5)


def test_expm_near_the_degree_8_limit_is_float32_accurate():
    """A rotation-and-decay generator with alpha_3 just below the degree-8 threshold (0.61): every
    Taylor coefficient up to x^8 matters at float32 precision."""
    theta = 0.6
    G = torch.tensor([[0.0, -theta, 0.0], [theta, 0.0, 0.0], [0.0, 0.0, -theta]])
    torch.testing.assert_close(expm(G), torch.linalg.matrix_exp(G.double()).float(), atol=5e-7, rtol=0)
