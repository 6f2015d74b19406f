"""Preprocessing (Sec. 3.3, Eqs. 8-11): exact inverses, Procrustes, fitting on the training split only."""

import pytest
import torch

from kaelab.errors import ConfigError
from kaelab.koopman.preprocessing import (
    Chain,
    FrobeniusNormalize,
    MeanCenter,
    PairPreprocessor,
    PCAProjection,
    ProcrustesAlign,
)


def _data(n=400, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) + 3.0


@pytest.mark.parametrize(
    "step",
    [
        MeanCenter(),
        PCAProjection(),
        FrobeniusNormalize(100.0),
        Chain(MeanCenter(), PCAProjection(), FrobeniusNormalize()),
    ],
)
def test_inverse_of_transform_is_identity(step):
    x = _data()
    y = step.fit_transform(x)
    torch.testing.assert_close(step.inverse_transform(y), x, rtol=1e-4, atol=1e-4)


def test_each_step_does_what_the_paper_says():
    x = _data()
    assert MeanCenter().fit_transform(x).mean(0).abs().max() < 1e-4
    c = MeanCenter().fit_transform(x)
    p = PCAProjection(q=5).fit(c)
    assert p.transform(c).shape == (400, 5)
    torch.testing.assert_close(p.components.T @ p.components, torch.eye(5), atol=1e-5, rtol=0)
    var = p.transform(c).var(0)
    assert torch.all(var[:-1] >= var[1:] - 1e-4)  # ordered by variance
    assert torch.linalg.matrix_norm(FrobeniusNormalize(100.0).fit_transform(c)).item() == pytest.approx(100.0, rel=1e-5)


def test_pca_signs_are_deterministic():
    x = MeanCenter().fit_transform(_data())
    a = PCAProjection().fit(x).components
    b = PCAProjection().fit(x[torch.randperm(len(x))]).components
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_procrustes_is_orthogonal_and_recovers_a_known_rotation():
    x = _data(d=8)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(3)))
    al = ProcrustesAlign().fit(x, x @ q)
    r = al.rotation
    torch.testing.assert_close(r.T @ r, torch.eye(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(r, q, atol=1e-4, rtol=0)
    torch.testing.assert_close(al.inverse_transform(al.transform(x)), x, atol=1e-4, rtol=1e-4)


def test_pair_preprocessor_fits_on_train_only_and_inverts_target():
    xi_tr, xj_tr = _data(seed=1), _data(seed=2)
    xi_te, xj_te = _data(n=50, seed=3) * 5, _data(n=50, seed=4) * 5  # very different statistics
    prep = PairPreprocessor(scale=100.0).fit(xi_tr, xj_tr)
    state = {k: v.clone() for k, v in prep.state_dict().items()}
    prep.transform_source(xi_te), prep.transform_target(xj_te)
    for k, v in prep.state_dict().items():  # transforming test data does not refit
        torch.testing.assert_close(v, state[k])
    torch.testing.assert_close(prep.source.steps[0].mean, xi_tr.mean(0), atol=1e-4, rtol=0)
    # test data are mapped with training statistics: not centred, not of norm 100
    assert prep.transform_target(xj_te).mean(0).abs().max() > 1.0
    torch.testing.assert_close(prep.inverse_target(prep.transform_target(xj_te)), xj_te, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(prep.inverse_source(prep.transform_source(xi_te)), xi_te, atol=1e-3, rtol=1e-4)
    # Procrustes brings x_i closer to the anchor x_j
    before = (prep.source.transform(xi_tr) - prep.transform_target(xj_tr)).norm()
    after = (prep.transform_source(xi_tr) - prep.transform_target(xj_tr)).norm()
    assert after < before


def test_state_dict_roundtrip():
    xi, xj = _data(seed=1), _data(seed=2)
    prep = PairPreprocessor(q=6).fit(xi, xj)
    other = PairPreprocessor(q=6).load_state_dict(prep.state_dict())
    torch.testing.assert_close(other.transform_source(xi), prep.transform_source(xi))
    torch.testing.assert_close(
        other.inverse_target(prep.transform_target(xj)), prep.inverse_target(prep.transform_target(xj))
    )


def test_bad_preprocessing_settings():
    with pytest.raises(ConfigError, match="kae.q"):
        PCAProjection(q=50).fit(_data())
    with pytest.raises(ConfigError, match="same shape"):
        ProcrustesAlign().fit(_data(d=4), _data(d=5))
