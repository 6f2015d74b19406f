"""The KAE's path (its steps against the base model's blocks), the spectral analysis of its operator
and the spectral edit (kaelab.koopman.path, kaelab.koopman.spectrum, kaelab.editing.spectral)."""

from __future__ import annotations

from unittest.mock import patch

import pytest
import torch

from conftest import YY_SMALL_KAE, compose_cfg, run_cfg
from kaelab.editing.spectral import select_modes, spectral_unlearn
from kaelab.errors import ConfigError
from kaelab.koopman.kae import KoopmanAutoencoder
from kaelab.koopman.path import BlockAligner, block_steps, decoded_steps, linear_cka, path_fidelity
from kaelab.koopman.spectrum import (
    Spectrum,
    class_mode_energy,
    class_mode_specificity,
    decompose,
    effective_rank,
    modal_stats,
    mode_separation,
)


def linear_kae(d: int, k: int, G: torch.Tensor, **kw) -> KoopmanAutoencoder:
    """A KAE whose encoder and decoder are the identity: it represents x -> A^t x exactly."""
    kae = KoopmanAutoencoder(d, [], d, k, {"recon": 1, "linear": 1, "state": 1, "iso": 0}, **kw)
    with torch.no_grad():
        for lin in (kae.encoder[0], kae.decoder[0]):
            lin.weight.copy_(torch.eye(d))
            lin.bias.zero_()
        kae.koopman.G.copy_(G)
    return kae.eval()


def linear_network(x0: torch.Tensor, G: torch.Tensor, k: int, steps: list[int]) -> list[torch.Tensor]:
    """A "network" that is a known linear system: block l = A^{t_l} x0, A = exp(G/k)."""
    A = torch.linalg.matrix_exp(G.double() / k)
    return [(x0.double() @ torch.linalg.matrix_power(A, t).T).float() for t in steps]


@pytest.fixture
def system():
    g = torch.Generator().manual_seed(0)
    d, k = 6, 10
    G = 0.5 * torch.randn(d, d, generator=g) - 0.3 * torch.eye(d)
    x0 = torch.randn(400, d, generator=g)
    return d, k, G, x0


# ------------------------------------------------------------------------------------------ mapping
def test_block_steps_even_spacing_also_when_k_is_not_divisible():
    assert block_steps(4, 100) == [20, 40, 60, 80]  # Yin-Yang: 4 blocks between x_i and x_j
    assert block_steps(3, 10) == [3, 5, 8]  # MNIST: 10 / 4 = 2.5 per block, rounded half up
    assert block_steps(2, 3) == [1, 2]  # as many blocks as inner steps
    assert block_steps(1, 7) == [4]
    assert block_steps(3, 10, [1, 2, 9]) == [1, 2, 9]  # given explicitly
    for n, k in ((3, 10), (4, 100), (5, 7)):
        steps = block_steps(n, k)
        assert len(set(steps)) == n and 0 < min(steps) and max(steps) < k


@pytest.mark.parametrize(
    "n, k, steps, msg",
    [
        (4, 4, None, "4 intermediate blocks need at least 5 KAE steps"),
        (3, 10, [2, 5], "maps 2 blocks"),
        (3, 10, [5, 3, 8], "increase strictly"),
        (2, 10, [0, 5], "within 1..9"),
        (2, 10, [5, 10], "within 1..9"),
    ],
)
def test_block_steps_bad_mappings_are_one_line_errors(n, k, steps, msg):
    with pytest.raises(ConfigError, match=msg) as err:
        block_steps(n, k, steps)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ fidelity
def test_decode_steps_are_the_trajectorys_states(system):
    d, k, G, x0 = system
    kae = KoopmanAutoencoder(d, [8], 5, k, {"recon": 1})  # a real (nonlinear) encoder and decoder
    _, traj = kae.trajectory(x0)
    steps = [1, 4, 5, 9]
    A = torch.linalg.matrix_exp(kae.koopman.G.detach() / k)
    with torch.no_grad():
        powers = kae.koopman.powers([*steps, k])
        for t, P in zip([*steps, k], powers, strict=True):
            torch.testing.assert_close(P, torch.linalg.matrix_power(A, t), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(powers[-1], kae.koopman.matrix(), atol=1e-5, rtol=1e-4)  # K = A^k
    for t, dec in zip(steps, decoded_steps(kae, x0, steps, batch_size=150), strict=True):
        torch.testing.assert_close(dec, traj[t], atol=1e-5, rtol=1e-4)


def test_path_fidelity_is_zero_fvu_for_a_linear_network_the_kae_represents(system):
    d, k, G, x0 = system
    kae = linear_kae(d, k, G)
    steps = block_steps(3, k)
    blocks = linear_network(x0, G, k, steps)
    x_j = linear_network(x0, G, k, [k])[0]
    fid = path_fidelity(decoded_steps(kae, x0, steps), blocks, x0, x_j, [t / k for t in steps])
    assert max(fid["fvu"]) < 1e-8
    assert min(fid["cka"]) > 1 - 1e-8
    assert min(fid["fvu_line"]) > 1e-3  # the straight line is not this path: the baseline is informative
    # blocks mapped to the wrong steps are seen as such
    wrong = path_fidelity(decoded_steps(kae, x0, [1, 2, 3]), blocks, x0, x_j, [0.1, 0.2, 0.3])
    assert min(wrong["fvu"]) > 1e-3


def test_linear_cka_invariant_to_rotation_and_scale_not_to_shuffling():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 5, generator=g)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g))
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, x[torch.randperm(300, generator=g)]) < 0.2


def test_block_aligner_maps_a_rotated_scaled_block_onto_the_anchor():
    g = torch.Generator().manual_seed(2)
    x_j = torch.randn(500, 4, generator=g) * torch.tensor([3.0, 2.0, 1.0, 0.5]) + 7.0
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))
    block = 0.1 * (x_j - 7.0) @ q - 2.0  # the same states, rotated, scaled and shifted
    from kaelab.koopman.preprocessing import PairPreprocessor

    prep = PairPreprocessor(None, 100.0).fit(block, x_j)
    anchor = prep.transform_target(x_j)
    aligner = BlockAligner(None, 100.0).fit({"b": block}, anchor)
    torch.testing.assert_close(aligner.transform("b", block), anchor, atol=1e-3, rtol=1e-3)
    assert aligner.stack({"b": block}).shape == (500, 1, 4)


# ------------------------------------------------------------------------------------------ path loss
def test_path_loss_is_zero_when_the_steps_match_the_blocks_and_enters_the_total(system):
    d, k, G, x0 = system
    steps = block_steps(3, k)
    blocks = torch.stack(linear_network(x0, G, k, steps), dim=1)
    x_j = linear_network(x0, G, k, [k])[0]
    kae = linear_kae(d, k, G, path_lambda=2.0, path_steps=steps)
    terms = kae.loss_terms(x0, x_j, blocks=blocks)
    assert terms["path"].item() < 1e-10 and terms["state"].item() < 1e-10
    off = blocks + 0.1 * torch.randn_like(blocks)
    bad = kae.loss_terms(x0, x_j, blocks=off)
    assert bad["path"].item() == pytest.approx(0.01, rel=0.2)
    base = {t: v for t, v in bad.items() if t != "path"}
    plain = kae.loss_terms(x0, x_j)  # without blocks: K from expm(G), not A^k; the same terms
    for t in plain:
        assert plain[t].item() == pytest.approx(base[t].item(), rel=1e-3, abs=1e-8)
    assert (kae.total_loss(bad) - kae.total_loss(base)).item() == pytest.approx(2.0 * bad["path"].item(), rel=1e-5)
    # the path loss trains the operator: its gradient reaches G
    kae.koopman.G.grad = None
    kae.loss_terms(x0, x_j, blocks=off)["path"].backward()
    assert kae.koopman.G.grad.abs().sum() > 0


@pytest.mark.parametrize("route", ["steps", "gaps", None])
@pytest.mark.parametrize(("d", "n", "cheaper"), [(6, 400, "gaps"), (64, 8, "steps")], ids=["narrow", "wide"])
def test_advance_gives_a_to_the_t_by_either_route(d, n, cheaper, route):
    """KoopmanOperator.advance: A^t z for each step, one step of A at a time or from step to step
    through A^gap (A^2 and A^3 built once for steps 3, 5, 8, 10), the latter where the products cost
    less than the steps they save (a narrow operator, many rows), values and gradients alike."""
    from kaelab.koopman import operator

    g = torch.Generator().manual_seed(3)
    op = operator.KoopmanOperator(d, 10)
    G = 0.3 * torch.randn(d, d, generator=g) / d**0.5
    with torch.no_grad():
        op.G.copy_(G)
    z = torch.randn(n, d, generator=g)
    steps = [3, 5, 8, 10]
    assert operator._gap_products([3, 2, 3, 2]) == [(2, 1, 1), (3, 2, 1)]
    assert [d for d, _, _ in operator._gap_products([20] * 5)] == [2, 3, 5, 10, 20]
    products = []
    real_matmul = torch.Tensor.__matmul__
    with patch.object(torch.Tensor, "__matmul__", lambda a, b: products.append(a.shape) or real_matmul(a, b)):
        got = op.advance(z, steps, route=route)
    applied = sum(1 for s in products if s[0] == n)  # z @ (...): one per step of A or per gap
    assert applied == {"steps": 10, "gaps": 4}[route or cheaper]
    A = torch.linalg.matrix_exp(G.double() / 10)
    for t, zt in zip(steps, got, strict=True):
        torch.testing.assert_close(zt, (z.double() @ torch.linalg.matrix_power(A, t).T).float(), atol=1e-4, rtol=1e-4)
    (grad,) = torch.autograd.grad(sum((zt * zt).sum() for zt in op.advance(z, steps, route=route)), op.G)
    (ref,) = torch.autograd.grad(sum((zt * zt).sum() for zt in op.advance(z, steps, route="steps")), op.G)
    torch.testing.assert_close(grad, ref, atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="route"):
        op.advance(z, steps, route="powers")
    for bad in ([3, 3, 10], [0, 5], []):
        with pytest.raises(ValueError, match="increase strictly"):
            op.advance(z, bad)


def test_split_path_rows_pair_each_block_with_its_own_slice_of_the_batch(system):
    """kae.path.rows=split: block b's loss on the b-th third of the batch, decoded step and block
    taken from the same samples; rows outside a block's slice do not enter its loss."""
    d, k, G, x0 = system
    steps = block_steps(3, k)
    blocks = torch.stack(linear_network(x0, G, k, steps), dim=1)
    x_j = linear_network(x0, G, k, [k])[0]
    kae = linear_kae(d, k, G, path_lambda=1.0, path_steps=steps, path_rows="split")
    assert kae.loss_terms(x0, x_j, blocks=blocks)["path"].item() < 1e-10
    m = len(x0) // 3
    off = blocks.clone()
    off[m:, 0] += 1.0  # block 0 is read on rows [0, m) only
    off[: 2 * m, 2] -= 1.0  # block 2 on rows [2m, 3m)
    assert kae.loss_terms(x0, x_j, blocks=off)["path"].item() < 1e-10
    off[:m, 0] += 0.3
    assert kae.loss_terms(x0, x_j, blocks=off)["path"].item() == pytest.approx(0.09 / 3, rel=1e-4)
    with pytest.raises(ConfigError, match="kae.path.rows"):
        linear_kae(d, k, G, path_lambda=1.0, path_steps=steps, path_rows="half")


def test_path_lambda_must_be_nonnegative_and_have_steps():
    with pytest.raises(ConfigError, match="kae.path.lam=-1"):
        KoopmanAutoencoder(3, [], 3, 5, {}, path_lambda=-1.0, path_steps=[2])
    with pytest.raises(ConfigError, match="needs intermediate blocks"):
        KoopmanAutoencoder(3, [], 3, 5, {}, path_lambda=1.0)


# ------------------------------------------------------------------------------------------ cache key
def test_the_kae_key_follows_what_trains_the_path(tmp_path):
    """The path loss's settings key the KAE only when the loss trains; the report never does.
    Catches: ``kae.path.rows`` or ``steps`` left out of the key (a split-rows KAE served for an
    all-rows one), or the report's flag re-keying (and retraining) every KAE."""
    from kaelab.koopman.pipeline import kae_key

    sizes = {"train": 5000, "val": 1000, "test": 1000}

    def key(overrides):
        cfg = compose_cfg(["+experiment=yinyang_kae", *overrides], tmp_path)
        return kae_key(cfg, "base", "input_layer", "blocks.4", sizes)

    assert key(["kae.path.report=false"]) == key([])  # the report does not change training
    assert key(["kae.path.lam=1"]) != key([])
    assert key(["kae.path.lam=1", "kae.path.steps=[10,30,50,70]"]) != key(["kae.path.lam=1"])
    assert key(["kae.path.lam=1", "kae.path.rows=split"]) != key(["kae.path.lam=1"])
    assert key(["kae.path.rows=split"]) == key([])  # no path loss: rows change nothing


# ------------------------------------------------------------------------------------------ spectrum
def test_eigendecomposition_reconstructs_K_and_A():
    g = torch.Generator().manual_seed(3)
    G = torch.randn(30, 30, generator=g, dtype=torch.float64) / 30**0.5
    spec = decompose(G, k=7)
    K = torch.linalg.matrix_exp(G)
    torch.testing.assert_close(spec.operator(), K, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(spec.operator(spec.eig_A), torch.linalg.matrix_exp(G / 7), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(spec.eig_A**7, spec.eig_K)
    assert (spec.eig_K.abs()[:-1] >= spec.eig_K.abs()[1:] - 1e-12).all()  # ordered by |eigenvalue of K|
    again = Spectrum.from_state_dict(spec.state_dict())  # the cached artifact's round trip
    torch.testing.assert_close(again.operator(), K, atol=1e-10, rtol=1e-10)
    assert effective_rank(torch.eye(5, dtype=torch.float64)) == pytest.approx(5.0)
    assert effective_rank(torch.diag(torch.tensor([1.0, 0, 0]))) == pytest.approx(1.0)


def synthetic_operator(n_cls: int = 3, p: int = 6, n: int = 200):
    """A generator whose first n_cls modes each belong to one class: class c's observables are
    mostly mode c (plus small shared noise in every mode)."""
    g = torch.Generator().manual_seed(4)
    V = torch.eye(p, dtype=torch.float64) + 0.3 * torch.randn(p, p, generator=g, dtype=torch.float64)
    V = V / V.norm(dim=0)
    mu = torch.linspace(0.5, -1.0, p, dtype=torch.float64)  # distinct, real, in decreasing order
    G = V @ torch.diag(mu) @ torch.linalg.inv(V)
    labels = torch.arange(n_cls).repeat_interleave(n)
    coords = 0.05 * torch.randn(len(labels), p, generator=g, dtype=torch.float64)
    coords[torch.arange(len(labels)), labels] += 2.0 + 0.2 * torch.randn(len(labels), generator=g, dtype=torch.float64)
    return G, coords @ V.T, labels


def test_class_mode_energies_find_the_class_aligned_modes():
    G, z, labels = synthetic_operator()
    spec = decompose(G, k=10)
    energy = class_mode_energy(spec, z, labels, 3)
    torch.testing.assert_close(energy.sum(1), torch.ones(3, dtype=torch.float64))
    for c in range(3):
        assert energy[c].argmax().item() == c and energy[c, c] > 0.95
    stats = modal_stats(spec, z, labels, 3, chunk=77)  # chunks that cut across classes
    sep = mode_separation(stats)
    assert set(torch.argsort(sep, descending=True)[:3].tolist()) == {0, 1, 2}
    assert sep[3:].max() < 0.1 and sep[:3].min() > 0.9
    for c in range(3):
        assert class_mode_specificity(stats, [c]).argmax().item() == c
    # the chunked statistics are those of the per-sample coordinates
    b = spec.coordinates(z)
    torch.testing.assert_close(stats.sum_e[1], (b[labels == 1].abs() ** 2).sum(0))
    # the 1-norm condition number is within a factor p of the 2-norm one, and >= 1
    c2, p = torch.linalg.cond(spec.V).item(), spec.V.shape[0]
    assert 1.0 <= spec.cond() and c2 / p <= spec.cond() <= c2 * p


def test_spectral_edit_suppresses_the_forgotten_class_mode_only():
    G, z, labels = synthetic_operator()
    spec = decompose(G, k=10)
    sel = select_modes(modal_stats(spec, z, labels, 3), [1], ratio=2.0, max_modes=None)
    assert sel.modes == [1] and sel.forget_energy_share > 0.95 and sel.retain_energy_share < 0.01
    kae = linear_kae(6, 10, G.float())
    edit, _ = spectral_unlearn(kae, spec, z.float(), labels, [1], ratio=2.0)
    out_before, out_after = z @ edit.K_before.T, z @ edit.K_after.T
    keep, gone = labels != 1, labels == 1
    kept_change = (out_after[keep] - out_before[keep]).norm() / out_before[keep].norm()
    gone_change = (out_after[gone] - out_before[gone]).norm() / out_before[gone].norm()
    assert kept_change < 0.05 and gone_change > 0.9
    assert edit.K_after.dtype == torch.float64 and not torch.is_complex(edit.K_after)


def test_spectral_edit_keeps_conjugate_pairs_together():
    theta = 0.4
    rot = torch.tensor([[0.0, -theta], [theta, 0.0]], dtype=torch.float64)
    G = torch.block_diag(rot, torch.diag(torch.tensor([-0.2, -0.5], dtype=torch.float64)))
    labels = torch.tensor([0] * 50 + [1] * 50)
    g = torch.Generator().manual_seed(5)
    z = 0.05 * torch.randn(100, 4, generator=g, dtype=torch.float64)
    z[:50, :2] += torch.randn(50, 2, generator=g, dtype=torch.float64)  # class 0 lives in the rotation
    z[50:, 2:] += torch.randn(50, 2, generator=g, dtype=torch.float64)
    spec = decompose(G, k=4)
    sel = select_modes(modal_stats(spec, z, labels, 2), [0], ratio=2.0, max_modes=1)
    assert len(sel.modes) == 2  # the pair, though max_modes=1
    assert torch.allclose(spec.eig_K[sel.modes[0]], spec.eig_K[sel.modes[1]].conj())


# ------------------------------------------------------------------------------------------ stages
@pytest.mark.slow
def test_path_report_spectrum_and_spectral_edit_stages(tmp_path):
    """Small Yin-Yang: the KAE report has path fidelity, task=spectrum caches the decomposition that
    the spectral edit reads, and the path-regularised KAE follows the blocks more closely."""
    m = run_cfg(["+experiment=yinyang_kae", *YY_SMALL_KAE], tmp_path)
    assert m["path/blocks"] == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    assert m["path/steps"] == [20, 40, 60, 80]
    assert len(m["path/fvu_per_block"]) == 4 and len(m["path/cka_per_block"]) == 4
    assert m["path/fvu_mean"] == pytest.approx(sum(m["path/fvu_per_block"]) / 4)
    assert (tmp_path / "run" / "path_fidelity.png").is_file()

    s = run_cfg(["+experiment=yinyang_spectrum", *YY_SMALL_KAE], tmp_path)
    assert s["kae/cache_hit"] and not s["spectrum/cache_hit"]
    assert s["spectrum/reconstruction_rel_err"] < 1e-8 and s["spectrum/n_modes"] == 20
    assert s["spectrum/radius_A"] == pytest.approx(s["spectrum/radius_K"] ** (1 / 100), rel=1e-9)
    assert (tmp_path / "run" / "spectrum" / "class_mode_energy.csv").is_file()

    e = run_cfg(["+experiment=yinyang_edit", *YY_SMALL_KAE, "edit.strategy=spectral", "edit.figure=false"], tmp_path)
    assert e["edit/spectral_decomposition_cache_hit"] and e["edit/strategy"] == "spectral"
    assert e["edit/spectral_modes"] and e["edit/spectral_forget_energy_share"] > e["edit/spectral_retain_energy_share"]

    r = run_cfg(["+experiment=yinyang_kae", *YY_SMALL_KAE, "kae.path.lam=1"], tmp_path)
    assert not r["kae/cache_hit"] and r["kae/key"] != m["kae/key"]
    assert r["path/fvu_mean"] < m["path/fvu_mean"]
