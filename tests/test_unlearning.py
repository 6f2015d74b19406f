"""Algorithm 1 (kaelab.editing.unlearning) on a KAE whose answer is known: identity encoder and
decoder, classes living in orthogonal subspaces of observable space, x_j = K x_i exactly. A linear
edit can then move one class without touching the others, so forgetting must be complete and
retention exact; the target strategies are checked against brute force."""

import pytest
import torch

from kaelab.editing.statistics import KeyStatistics, key_statistics
from kaelab.editing.targets import NearestRetained, NearestRetainedCentroid, Retained, class_centroids, nearest_rows
from kaelab.editing.unlearning import exclusive_energy, unlearn_classes
from kaelab.koopman.kae import KoopmanAutoencoder

P, PER_CLASS = 6, 40


def _linear_kae(seed=0):
    kae = KoopmanAutoencoder(P, [], P, 4, dict(recon=1, linear=1, state=1, iso=1)).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lin in (kae.encoder[0], kae.decoder[0]):
            lin.weight.copy_(torch.eye(P))
            lin.bias.zero_()
        kae.koopman.G.copy_(0.3 * torch.randn(P, P, generator=g, dtype=torch.float64))
    return kae


def _orthogonal_classes(kae, seed=0):
    """Class c occupies coordinates 2c, 2c+1 (with a positive offset so classes are apart)."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c in range(3):
        x = torch.zeros(PER_CLASS, P, dtype=torch.float64)
        x[:, 2 * c : 2 * c + 2] = 1.0 + 0.2 * torch.randn(PER_CLASS, 2, generator=g, dtype=torch.float64)
        xs.append(x)
        ys.append(torch.full((PER_CLASS,), c))
    x_i = torch.cat(xs)
    K = torch.linalg.matrix_exp(kae.koopman.G.detach())
    return x_i, x_i @ K.T, torch.cat(ys)


@pytest.mark.parametrize("targets,redirect", [("nearest_retained", None), ("class_centroid", 0)])
def test_edit_moves_the_forgotten_class_exactly_and_nothing_else(targets, redirect):
    kae = _linear_kae()
    x_i, x_j, y = _orthogonal_classes(kae)
    edit = unlearn_classes(kae, x_i, x_j, y, [2], 3, targets=targets, redirect_to=redirect, mu=1e-9, lam=1e-9)
    K, K2 = edit.K_before, edit.K_after
    keep, forget = x_i[y != 2], x_i[y == 2]
    # retained outputs untouched (their subspace is orthogonal to the edit's)
    torch.testing.assert_close(keep @ K2.T, keep @ K.T, atol=1e-6, rtol=0)
    # the forgotten class's outputs are the least-squares fit of its targets over its own subspace
    # (a linear map cannot send a 2-d cloud onto one point or onto nearest neighbours exactly)
    out = forget @ K2.T
    if targets == "class_centroid":
        wanted = x_j[y == 0].mean(0).expand(len(forget), -1)
    else:
        wanted = keep[torch.cdist(forget, keep).argmin(1)] @ K.T
    fit = torch.linalg.lstsq(forget, wanted - forget @ K.T).solution
    torch.testing.assert_close(out, forget @ K.T + forget @ fit, atol=1e-5, rtol=0)
    # ... which takes them out of their class: nearer the retained outputs than their old ones
    own, other = x_j[y == 2].mean(0), x_j[y != 2]
    assert (torch.cdist(out, other).min(1).values < (out - own).norm(dim=1)).all()
    assert edit.info.form == "pxp"  # 40 edit keys > p = 6
    assert edit.exclusive_energy == pytest.approx(1.0, abs=1e-9)  # the class has directions of its own


def test_inverse_keys_recover_the_inputs():
    """K^-1 phi(x_j) = phi(x_i) when x_j = K x_i: keys_from=inverse and encoded give the same edit."""
    kae = _linear_kae(1)
    x_i, x_j, y = _orthogonal_classes(kae, 1)
    a = unlearn_classes(kae, x_i, x_j, y, [1], 3, keys="inverse", mu=1e-9, lam=1e-9)
    b = unlearn_classes(kae, x_i, x_j, y, [1], 3, keys="encoded", mu=1e-9, lam=1e-9)
    torch.testing.assert_close(a.K_after, b.K_after, atol=1e-6, rtol=0)


def test_shared_directions_leave_no_exclusive_energy():
    g = torch.Generator().manual_seed(0)
    keep = torch.randn(200, P, generator=g, dtype=torch.float64)  # retained keys fill every direction
    assert exclusive_energy(torch.randn(30, P, generator=g, dtype=torch.float64), keep) < 0.05


def test_target_strategies_against_brute_force():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(5, 5, generator=g, dtype=torch.float64)
    keys_edit = torch.randn(17, 5, generator=g, dtype=torch.float64)
    keys_keep = torch.randn(50, 5, generator=g, dtype=torch.float64)
    outputs_keep = torch.randn(50, 5, generator=g, dtype=torch.float64)
    labels = torch.arange(50) % 3
    assert torch.equal(nearest_rows(keys_edit, keys_keep, chunk=4), torch.cdist(keys_edit, keys_keep).argmin(1))
    cent = class_centroids(outputs_keep, labels, 4)
    torch.testing.assert_close(cent[1], outputs_keep[labels == 1].mean(0))
    assert torch.isnan(cent[3]).all()  # a class without samples has no centroid
    retained = Retained(labels, 4, keys=keys_keep, outputs=outputs_keep)
    v = NearestRetainedCentroid()(W, keys_edit, retained)
    expected = cent[:3][torch.cdist(keys_edit @ W.T, cent[:3]).argmin(1)]
    torch.testing.assert_close(v, expected)
    v = NearestRetained()(W, keys_edit, retained)
    torch.testing.assert_close(v, keys_keep[torch.cdist(keys_edit, keys_keep).argmin(1)] @ W.T)


def test_retained_samples_are_encoded_only_when_a_rule_reads_them():
    """Catches a Retained that encodes every retained sample up front (the cost class statistics
    exist to avoid) or that encodes them again on every read."""
    calls = []

    def encoded(x):
        def run():
            calls.append(1)
            return x

        return run

    keys, outputs, labels = torch.randn(6, 3), torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    retained = Retained(labels, 3, keys=encoded(keys), outputs=encoded(outputs), centroids=torch.zeros(3, 3))
    NearestRetainedCentroid()(torch.eye(3), torch.randn(4, 3), retained)
    assert calls == []  # the given centroids suffice
    NearestRetained()(torch.eye(3), torch.randn(4, 3), retained)
    NearestRetained()(torch.eye(3), torch.randn(4, 3), retained)
    assert calls == [1]


@pytest.mark.parametrize("targets,redirect", [("nearest_retained_centroid", None), ("class_centroid", 1)])
def test_class_statistics_give_the_same_edit_as_every_retained_key(targets, redirect):
    """The cached per-class sums (kaelab.editing.statistics) stand in for the retained samples.
    Catches statistics that leak the forgotten class into C0 or the centroids, or miss a class."""
    kae = _linear_kae(2)
    x_i, x_j, y = _orthogonal_classes(kae, 2)
    x_i, x_j = x_i + 0.05 * torch.randn_like(x_i), x_j + 0.05 * torch.randn_like(x_j)  # classes overlap a bit
    stats = key_statistics(kae, x_i, x_j, y, 3, batch_size=7)  # odd batches: sums across them
    assert stats.count.tolist() == [PER_CLASS] * 3
    for forget in ([0], [2], [0, 2]):
        if redirect in forget:
            continue
        kw = dict(targets=targets, redirect_to=redirect, mu=0.1, lam=0.1)
        full = unlearn_classes(kae, x_i, x_j, y, forget, 3, **kw)
        fast = unlearn_classes(kae, x_i, x_j, y, forget, 3, stats=stats, **kw)
        torch.testing.assert_close(fast.K_after, full.K_after, atol=1e-10, rtol=1e-10)
        assert fast.info.n_preserve == full.info.n_preserve == PER_CLASS * (3 - len(forget))
        assert fast.exclusive_energy == pytest.approx(full.exclusive_energy, abs=1e-10)
    round_trip = KeyStatistics.from_state_dict(stats.state_dict())
    torch.testing.assert_close(round_trip.preserve_gram([1]), stats.gram[[0, 2]].sum(0))
    assert torch.isnan(stats.output_centroids([1])[1]).all() and not torch.isnan(stats.output_centroids([1])[0]).any()
