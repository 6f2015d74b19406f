"""PCA projection (KAE paper, Eq. 9) keeps the directions of largest variance.

Wrong implementation this catches: the projection onto the q directions of least variance (the
last right singular vectors), invisible whenever q = d (the projection is then a rotation).
"""

from __future__ import annotations

import torch

from kaelab.koopman.preprocessing import PCAProjection


def test_pca_keeps_the_top_q_directions():
    g = torch.Generator().manual_seed(0)
    q_rot, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
    x = torch.randn(500, 3, generator=g) * torch.tensor([5.0, 2.0, 0.5]) @ q_rot.T  # variances along q_rot's columns
    x = x - x.mean(0)
    pca = PCAProjection(2).fit(x)
    kept = pca.components  # [3, 2]
    for j in range(2):  # the two largest-variance directions, up to sign
        assert abs(torch.dot(kept[:, j], q_rot[:, j]).item()) > 0.99, j
    var = pca.transform(x).var(0)
    assert var[0] > var[1] > 0.5 * 4.0  # ordered, and far above the dropped direction's 0.25
