"""task=spectrum and the spectral edit (edit.strategy=spectral) end to end on the small Yin-Yang
world, recomputed here from the cached KAE (the spectrum and spectral-edit stages of ``make test``;
tests/test_path_spectrum.py has the unit tests of kaelab.koopman.spectrum).

Wrong implementations these catch:
* the class x mode energies (and the mode statistics) computed on the test split's observables;
* A's spectral radius or effective rank reported as K's;
* the decomposition cached under a key without the KAE's content (a rebuilt KAE gets the old one);
* class specificity comparing raw energies instead of shares;
* the spectral edit made from the test split's keys (the selected modes and K' are the training split's).
"""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from kaelab.editing.spectral import spectral_unlearn
from kaelab.koopman.kae import KoopmanAutoencoder
from kaelab.koopman.spectrum import (
    ModalStats,
    class_mode_energy,
    class_mode_specificity,
    decompose,
    effective_rank,
    modal_stats,
    mode_separation,
)
from science_world import (
    EDIT,
    SPECTRUM,
    in_world,
    world_artifacts,
    world_cache_fixture,  # noqa: F401 (registers the fixture world_cache)
)


def observables(art, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return art.kae.eval().encoder(art.prep.transform_source(x)).double()


def test_spectrum_stage_is_the_training_splits_decomposition_of_the_kae(tmp_path, world_cache):
    """Every number of the report from the cached KAE's G: radii of K and A = K^(1/k), effective
    ranks, separating modes, and the class x mode table, from the TRAINING split's observables
    (which the test split's would not give)."""
    m = in_world(SPECTRUM, tmp_path, world_cache)
    _, _, data, art = world_artifacts(SPECTRUM, tmp_path)
    G, k = art.kae.koopman.G.detach().double(), art.kae.koopman.k
    K, A = torch.linalg.matrix_exp(G), torch.linalg.matrix_exp(G / k)
    assert m["spectrum/radius_K"] == pytest.approx(torch.linalg.eigvals(K).abs().max().item(), rel=1e-8)
    assert m["spectrum/radius_A"] == pytest.approx(torch.linalg.eigvals(A).abs().max().item(), rel=1e-8)
    assert m["spectrum/effective_rank"] == pytest.approx(effective_rank(K), rel=1e-8)
    assert m["spectrum/effective_rank_A"] == pytest.approx(effective_rank(A), rel=1e-6)
    assert m["spectrum/n_modes"] == G.shape[0] and m["spectrum/reconstruction_rel_err"] < 1e-8
    spec = decompose(G, k)
    z, labels = observables(art, data.reps["train"][art.source]), data.labels["train"]
    energy = class_mode_energy(spec, z, labels, 3)
    stats = modal_stats(spec, z, labels, 3)
    with open(tmp_path / "run" / "spectrum" / "class_mode_energy.csv") as f:
        rows = list(csv.DictReader(f))
    table = torch.tensor([[float(r[f"class_{c}"]) for c in range(3)] for r in rows], dtype=torch.float64).T
    torch.testing.assert_close(table, energy, rtol=1e-6, atol=1e-9)
    z_test = observables(art, data.reps["test"][art.source])
    assert not torch.allclose(class_mode_energy(spec, z_test, data.labels["test"], 3), energy, rtol=1e-3, atol=1e-6)
    assert m["spectrum/separating_modes"] == torch.argsort(mode_separation(stats), descending=True)[:5].tolist()
    tops = [torch.argsort(class_mode_specificity(stats, [c]), descending=True)[:5].tolist() for c in range(3)]
    assert m["spectrum/class_top_modes"] == tops


def test_spectral_edit_stage_reads_the_cached_decomposition_and_edits_from_the_training_split(tmp_path, world_cache):
    """After task=spectrum, edit.strategy=spectral reads its decomposition from the cache, and its
    operator and modes are spectral_unlearn's on the TRAINING split's keys, recomputed here."""
    in_world(SPECTRUM, tmp_path / "spectrum", world_cache)
    overrides = [*EDIT, "edit.strategy=spectral", "edit.target_class=2"]
    e = in_world(overrides, tmp_path / "edit", world_cache)
    assert e["edit/spectral_decomposition_cache_hit"] is True and e["edit/strategy"] == "spectral"
    _, _, data, art = world_artifacts(overrides, tmp_path / "edit")
    train = data.reps["train"]
    spec = decompose(art.kae.koopman.G, art.kae.koopman.k)
    edit, sel = spectral_unlearn(art.kae, spec, art.prep.transform_source(train[art.source]), data.labels["train"], [2])
    assert e["edit/spectral_modes"] == sel.modes
    assert e["edit/spectral_forget_energy_share"] == pytest.approx(sel.forget_energy_share, rel=1e-6)
    ops = load_file(str(tmp_path / "edit" / "run" / "edit" / "operator.safetensors"))
    torch.testing.assert_close(ops["K_after"], edit.K_after, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ops["K_before"], torch.linalg.matrix_exp(art.kae.koopman.G.detach().double()))


def test_the_cached_decomposition_follows_the_kaes_content(tmp_path):
    """A KAE rebuilt under the same key with other weights (another content hash) gets its own
    decomposition. Catches the spectrum keyed by the KAE's key alone."""
    from kaelab.koopman.spectrum_pipeline import cached_spectrum

    cfg = OmegaConf.create({"paths": {"cache_dir": str(tmp_path)}})
    arts = []
    for seed, content in ((0, "c1"), (1, "c2")):
        torch.manual_seed(seed)
        kae = KoopmanAutoencoder(2, [4], 3, 5, g_init="random")
        arts.append(SimpleNamespace(kae=kae, key="kae-a", content_hash=content))
    for art in arts:
        spec, hit = cached_spectrum(cfg, art)
        assert not hit
        torch.testing.assert_close(spec.operator(), torch.linalg.matrix_exp(art.kae.koopman.G.detach().double()))
    assert cached_spectrum(cfg, arts[0])[1]


def test_class_specificity_compares_shares_not_raw_energies():
    """A class with ten times the energy in every mode is no more specific to any mode: its share
    per mode is the same as the others'. Catches specificity from raw energies."""
    sum_e = torch.tensor([[10.0, 20.0, 30.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], dtype=torch.float64)
    stats = ModalStats(torch.ones(3, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.complex128), sum_e)
    torch.testing.assert_close(class_mode_specificity(stats, [0]), torch.ones(3, dtype=torch.float64))
