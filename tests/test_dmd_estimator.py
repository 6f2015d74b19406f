"""dmd.estimator: another DMD estimator (PyDMD's DMD, TLS-DMD) fitted on kaelab's per-sample
delay pairs. Wrong implementations these catch: an adapter that reads the wrong basis or operator
(it would not match kaelab's own DMD on the same pairs), an estimator config that is ignored (the
noisy-data estimates would not differ), and an estimator that cannot take snapshot pairs passing
silently (BOPDMD fits one time series)."""

import numpy as np
import pytest
import torch
from test_dmd import linear_system

from kaelab.dmd.operator import fit_delay_dmd
from kaelab.errors import ConfigError


def test_pydmd_dmd_on_the_same_pairs_gives_kaelabs_operator():
    S, _ = linear_system(n=40, steps=6, dim=3)
    ours = fit_delay_dmd(S, h=1, rank=-1, dtype=torch.float64)
    theirs = fit_delay_dmd(S, h=1, rank=-1, dtype=torch.float64, estimator={"_target_": "pydmd.DMD"})
    torch.testing.assert_close(theirs.operator.matrix(), ours.operator.matrix(), atol=1e-8, rtol=0)
    assert sorted(np.abs(theirs.operator.eigs)) == pytest.approx(sorted(np.abs(ours.operator.eigs)), abs=1e-8)


def test_total_least_squares_dmd_is_less_biased_under_noise():
    """Least squares shrinks the eigenvalues when X is noisy; TLS-DMD (PyDMD's tlsq_rank) corrects it."""
    S, A = linear_system(n=400, steps=5, dim=4)
    g = torch.Generator().manual_seed(1)
    noisy = S + 0.1 * S.std() * torch.randn(S.shape, generator=g, dtype=S.dtype)
    plain = fit_delay_dmd(noisy, h=0, rank=-1, dtype=torch.float64)
    tls = fit_delay_dmd(noisy, h=0, rank=-1, dtype=torch.float64, estimator={"_target_": "pydmd.DMD", "tlsq_rank": -1})
    true = np.sort(np.abs(np.linalg.eigvals(A.numpy())))
    err = {n: np.abs(np.sort(np.abs(f.operator.eigs)) - true).mean() for n, f in (("ls", plain), ("tls", tls))}
    assert err["tls"] < 0.5 * err["ls"], err


@pytest.mark.parametrize(
    "estimator,match",
    [
        ({"_target_": "pydmd.BOPDMD"}, "snapshot pairs failed|exposes no projection basis"),
        ({"_target_": "pydmd.NoSuchDMD"}, "cannot be imported"),
        ({"_target_": "pydmd.DMD", "bogus": 1}, "takes no argument 'bogus'"),
    ],
)
def test_an_estimator_that_cannot_fit_pairs_is_a_config_error(estimator, match):
    S, _ = linear_system(n=20, steps=4, dim=3)
    with pytest.raises(ConfigError, match=match):
        fit_delay_dmd(S, h=0, rank=-1, estimator=estimator)


def test_kaelabs_tls_projection_is_pydmds_without_the_n_by_n_projector():
    from pydmd.utils import compute_tlsq

    from kaelab.dmd.operator import tls_project

    g = np.random.default_rng(0)
    X, Y = g.normal(size=(6, 300)), g.normal(size=(6, 300))
    for rank in (2, 6, 12, 20):
        ours, theirs = tls_project(X, Y, rank), compute_tlsq(X, Y, rank)
        np.testing.assert_allclose(ours[0], theirs[0], atol=1e-10)
        np.testing.assert_allclose(ours[1], theirs[1], atol=1e-10)
