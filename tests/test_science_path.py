"""The KAE report's path fidelity (kaelab.koopman.pipeline.path_metrics) end to end on the small
Yin-Yang world, recomputed here from the cached KAE by an independent route, and a path-regularised
KAE trained end to end (the path stage of ``make test``; tests/test_path_spectrum.py has the
unit tests and the slow run to paper-like numbers).

Wrong implementations these catch:
* every block matched to the KAE step one off (in the report's mapping or its decoded steps);
* the block aligner fitted on the test split the fidelity is scored on (it must be the training split);
* the straight-line baseline run from x_j to x_i, and CKA without centring;
* ``kae.path.lam`` not training (the regularised KAE served from the plain KAE's cache entry).
"""

from __future__ import annotations

import pytest
import torch

from kaelab.koopman.path import BlockAligner, decoded_steps, linear_cka
from kaelab.koopman.surrogate import state_fvu
from science_world import (
    KAE,
    in_world,
    world_artifacts,
    world_cache_fixture,  # noqa: F401 (registers the fixture world_cache)
)

BLOCKS = ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]  # between input_layer (x_i) and blocks.4 (x_j)


def independent_fidelity(data, art, cfg, steps: list[int]) -> dict[str, list[float]]:
    """FVU, CKA and the straight line's FVU per block on the test split, with the aligner fitted on
    the TRAINING split and the decoded steps phi^-1(A^t phi(x_i)) at ``steps``."""
    train, test = data.reps["train"], data.reps["test"]
    anchor = art.prep.transform_target(train[art.target])
    aligner = BlockAligner(cfg.kae.q, cfg.kae.scale).fit({b: train[b] for b in BLOCKS}, anchor)
    x_i, x_j = art.prep.transform(test[art.source], test[art.target])
    decoded = decoded_steps(art.kae, x_i, steps)
    out: dict[str, list[float]] = {"fvu": [], "cka": [], "fvu_line": []}
    for b, t, dec in zip(BLOCKS, steps, decoded, strict=True):
        block = aligner.transform(b, test[b])
        f = t / cfg.kae.k
        out["fvu"].append(state_fvu(dec, block))
        out["cka"].append(linear_cka(dec, block))
        out["fvu_line"].append(state_fvu((1 - f) * x_i + f * x_j, block))
    return out


def test_path_report_is_the_train_fitted_fidelity_of_the_right_steps(tmp_path, world_cache):
    """Recomputes every per-block number of the report (decoded steps 20, 40, 60, 80 of k = 100,
    aligner fitted on the training split, scored on the test split); also checks that the data
    tells the right recomputation from the wrong ones (steps one off, aligner fitted on test)."""
    m = in_world(KAE, tmp_path, world_cache)
    cfg, _, data, art = world_artifacts(KAE, tmp_path)
    assert m["path/blocks"] == BLOCKS and m["path/steps"] == [20, 40, 60, 80]
    want = independent_fidelity(data, art, cfg, [20, 40, 60, 80])
    for key in ("fvu", "cka", "fvu_line"):
        assert m[f"path/{key}_per_block"] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
        assert m[f"path/{key}_mean"] == pytest.approx(sum(want[key]) / 4, rel=1e-4, abs=1e-6), key
    off = independent_fidelity(data, art, cfg, [21, 41, 61, 81])["fvu"]
    assert off != pytest.approx(want["fvu"], rel=1e-4, abs=1e-6)  # one step off is visible in the numbers
    assert (tmp_path / "run" / "path_fidelity.png").is_file()


def test_a_path_regularised_kae_trains_under_its_own_key_and_reports_its_path(tmp_path, world_cache):
    """kae.path.lam=1 with split rows end to end: another KAE (its own key, trained now, the path
    loss among its losses) whose report has path fidelity for the same blocks and steps."""
    plain = in_world(KAE, tmp_path / "plain", world_cache)
    m = in_world([*KAE, "kae.path.lam=1", "kae.path.rows=split"], tmp_path / "path", world_cache)
    assert m["kae/key"] != plain["kae/key"] and m["base/cache_hit"]
    assert m["path/lam"] == 1.0 and m["path/steps"] == [20, 40, 60, 80]
    assert len(m["path/fvu_per_block"]) == 4 and all(torch.isfinite(torch.tensor(m["path/fvu_per_block"])))


def test_decoded_steps_advance_by_a_to_the_t_of_a_non_symmetric_generator():
    """phi^-1(A^t phi(x)) with A = exp(G/k) for a G that is not symmetric (so A^t and its transpose
    differ). Catches the latents advanced by (A^t)^T."""
    from kaelab.koopman.kae import KoopmanAutoencoder

    torch.manual_seed(0)
    kae = KoopmanAutoencoder(3, [6], 4, 10, g_init="random").eval()
    G = kae.koopman.G.detach().double()
    assert not torch.allclose(G, G.T)
    x = torch.randn(50, 3)
    with torch.no_grad():
        z = kae.encoder(x).double()
        for t, got in zip([2, 7], kae.decode_steps(x, [2, 7]), strict=True):
            A_t = torch.linalg.matrix_power(torch.linalg.matrix_exp(G / 10), t)
            torch.testing.assert_close(got, kae.decoder((z @ A_t.T).float()), atol=1e-5, rtol=1e-4)


def test_linear_cka_is_the_centred_formula():
    """CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) on centred columns: a shifted copy has
    CKA 1, and a hand computation agrees. Catches CKA without centring."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(80, 3, generator=g), torch.randn(80, 4, generator=g)
    assert linear_cka(x, x + 10.0) == pytest.approx(1.0, abs=1e-10)
    xs, ys = (x + 3.0).double(), (y - 2.0).double()
    xc, yc = xs - xs.mean(0), ys - ys.mean(0)
    norm = torch.linalg.matrix_norm
    want = norm(yc.T @ xc) ** 2 / (norm(xc.T @ xc) * norm(yc.T @ yc))
    assert linear_cka(x + 3.0, y - 2.0) == pytest.approx(want.item(), rel=1e-9)
