"""The surrogate (kaelab.koopman.surrogate) against hand computations: x_i -> preprocess -> KAE ->
inverse preprocess -> the rest of the network, its FVU, agreement and split means.

Wrong implementations these catch:
* the KAE's prediction handed to the head without the inverse preprocessing;
* an edited operator passed as ``K`` ignored (before and after an edit would be the same);
* the state FVU divided by the uncentred sum of squares;
* the agreement with the base model computed against the labels (the surrogate's accuracy);
* a split's mean loss averaging batch means without their sizes;
* the KAE report's training losses taken on the test split.
"""

from __future__ import annotations

import pytest
import torch

import kaelab as kl
from kaelab.koopman.kae import KoopmanAutoencoder
from kaelab.koopman.surrogate import evaluate_surrogate, mean_loss_terms, predict_target, state_fvu
from science_world import (
    KAE,
    in_world,
    world_artifacts,
    world_cache_fixture,  # noqa: F401 (registers the fixture world_cache)
)


def setup(seed: int = 0):
    """A small network as a trajectory, its representations, a fitted preprocessing and an (untrained) KAE."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 6), torch.nn.Tanh(),
                              torch.nn.Linear(6, 3))  # fmt: skip
    x = torch.randn(120, 2)
    traj = kl.trajectory(net, x[:4], stages=["0", "1", "2", "3"], head="4")
    reps = kl.extract(traj, x)
    prep = kl.PairPreprocessor(scale=10.0).fit(reps["1"], reps["3"])
    kae = KoopmanAutoencoder(6, [8], 5, 4, g_init="random").eval()
    return traj, x, reps, prep, kae


def test_prediction_is_the_inverse_preprocessed_decoding_with_the_given_operator():
    traj, x, reps, prep, kae = setup()
    with torch.no_grad():
        z = kae.encoder(prep.transform_source(reps["1"]))
        want = prep.inverse_target(kae.decoder(z @ kae.koopman.matrix().T))
        K2 = 0.5 * torch.eye(5)
        want2 = prep.inverse_target(kae.decoder(z @ K2.T))
    torch.testing.assert_close(predict_target(kae, prep, reps["1"], batch_size=50), want)
    torch.testing.assert_close(predict_target(kae, prep, reps["1"], K=K2.double()), want2)
    assert not torch.allclose(want, want2)


def test_state_fvu_is_one_minus_r2_around_the_mean():
    g = torch.Generator().manual_seed(0)
    true = 100.0 + torch.randn(200, 3, generator=g)  # far from the origin: the centring matters
    assert state_fvu(true.mean(0).expand_as(true), true) == pytest.approx(1.0)
    assert state_fvu(true, true) == 0.0
    noisy = true + 0.1 * torch.randn(200, 3, generator=g)
    want = ((noisy - true) ** 2).sum() / ((true - true.mean(0)) ** 2).sum()
    assert state_fvu(noisy, true) == pytest.approx(want.item(), rel=1e-6)


def test_agreement_is_with_the_base_model_not_the_labels():
    traj, x, reps, prep, kae = setup()
    with torch.no_grad():
        base_pred = traj(x).argmax(1)
        kae_pred = traj.forward_from("3", predict_target(kae, prep, reps["1"])).argmax(1)
    labels = (base_pred + 1) % 3  # the base model is always wrong
    m = evaluate_surrogate(traj, "3", kae, prep, reps["1"], reps["3"], x, labels, 3)
    assert m["kae/agreement"] == pytest.approx((kae_pred == base_pred).double().mean().item())
    assert m["base/test_acc"] == 0.0
    assert m["kae/test_acc"] == pytest.approx((kae_pred == labels).double().mean().item())


def test_split_means_weight_each_batch_by_its_size():
    """Batches of 7 and 3 rows: the mean over the split is the whole split's MSE (terms that are
    per-sample means; the isometry term compares pairs within a batch and is left out)."""
    _, _, reps, prep, kae = setup()
    x_i, x_j = prep.transform(reps["1"][:10], reps["3"][:10])
    got = mean_loss_terms(kae, x_i, x_j, batch_size=7)
    with torch.no_grad():
        whole = kae.loss_terms(x_i, x_j)
    for t in ("recon", "linear", "state"):
        assert got[t] == pytest.approx(whole[t].item(), rel=1e-5), t


def test_reported_losses_are_the_training_and_test_splits_own(tmp_path, world_cache):
    """``kae/loss_*`` over the training pairs and ``kae/test_loss_*`` over the test pairs, in the
    training batch size, recomputed from the cached KAE."""
    m = in_world(KAE, tmp_path, world_cache)
    cfg, _, data, art = world_artifacts(KAE, tmp_path)
    for split, prefix in (("train", "kae/loss_"), ("test", "kae/test_loss_")):
        pair = art.prep.transform(data.reps[split][art.source], data.reps[split][art.target])
        for term, value in mean_loss_terms(art.kae, *pair, cfg.kae.batch_size).items():
            assert m[prefix + term] == pytest.approx(value, rel=1e-6), prefix + term
    assert m["kae/loss_state"] != pytest.approx(m["kae/test_loss_state"], rel=1e-6)
