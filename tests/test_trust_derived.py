"""Derived cache entries follow the CONTENT of what they were derived from, not only its config key.

A parent entry can be rebuilt under the same config key with other content: after damage (the cache
rebuilds it on its own), after "remove the entry" (kaelab's advice for a diverged KAE), with another
thread count or accelerator (not in any key), after a code change. Every derived entry (representations
of a base model, the KAE of representations, edit statistics and the spectrum of a KAE, the DMD layer
scaling of a base model) must then be rebuilt, never combined with the new parent."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import FAST, compose_cfg, run_cfg
from kaelab.cache import ArtifactCache
from kaelab.models import Trajectory, build_net

# a small Yin-Yang base model and KAE (seconds)
SMALL = [
    "data.n_train=300",
    "data.n_val=50",
    "data.n_test=200",
    "data.batch_size=100",
    "model.epochs=5",
    "kae.epochs=10",
    "kae.batch_size=100",
    "trainer.num_threads=1",
    *FAST,
]
RESMLP = dict(_target_="kaelab.models.ResMLP", in_dim=2, width=8, n_blocks=2, out_dim=3)


def _other_kae_seed(monkeypatch, seed: int) -> None:
    """The KAE trains with ``seed`` whatever ``kae.seed`` (and so its key) says: a rebuild under the
    same key then holds other weights, as one with another thread count or accelerator would."""
    from kaelab.koopman import pipeline

    real = pipeline.kae_estimator

    def estimator(kc, path_steps=None):
        kc = kc.copy()
        kc.seed = seed
        return real(kc, path_steps)

    monkeypatch.setattr(pipeline, "kae_estimator", estimator)


def _radius_K(kae_entry) -> float:
    """Spectral radius of K = exp(G) of the KAE stored in a cache entry."""
    from kaelab.koopman.estimator import KAE

    G = KAE.load(kae_entry).module_.koopman.G.detach().double()
    return torch.linalg.eigvals(torch.linalg.matrix_exp(G)).abs().max().item()


def test_edit_statistics_and_spectrum_follow_a_rebuilt_kae(tmp_path, monkeypatch):
    """Catches: edit_stats/<key> and spectrum/<key> keyed by the KAE's config key alone (the old Gram
    matrix, centroids and eigenvectors served with the new K after the KAE entry is rebuilt)."""
    spectrum = ["+experiment=yinyang_spectrum", *SMALL]
    edit = ["+experiment=yinyang_edit", *SMALL, "edit.figure=false"]
    s1 = run_cfg(spectrum, tmp_path)  # every run: the same cache (tmp_path/cache)
    e1 = run_cfg(edit, tmp_path)
    assert not s1["spectrum/cache_hit"] and not e1["edit/stats_cache_hit"] and e1["kae/cache_hit"]
    entry = tmp_path / "cache" / "kae" / s1["kae/key"]
    old_radius = _radius_K(entry)
    assert s1["spectrum/radius_K"] == pytest.approx(old_radius, rel=1e-9)

    shutil.rmtree(entry)  # "remove the entry", as kaelab advises for a diverged KAE
    _other_kae_seed(monkeypatch, 1234)
    s2 = run_cfg(spectrum, tmp_path)
    assert s2["kae/key"] == s1["kae/key"] and not s2["kae/cache_hit"]
    new_radius = _radius_K(entry)
    assert new_radius != pytest.approx(old_radius, rel=1e-6)  # the rebuilt KAE does differ
    assert not s2["spectrum/cache_hit"]
    assert s2["spectrum/radius_K"] == pytest.approx(new_radius, rel=1e-9)
    e2 = run_cfg(edit, tmp_path)
    assert e2["kae/cache_hit"] and not e2["edit/stats_cache_hit"]
    assert e2["edit/spectral_radius_before"] == pytest.approx(new_radius, rel=1e-6)
    e3 = run_cfg(edit, tmp_path)  # and the rebuilt statistics are reused from then on
    assert e3["edit/stats_cache_hit"] and e3["edit/forget_acc_after"] == e2["edit/forget_acc_after"]


def test_representations_and_kae_follow_a_rebuilt_base_model(tmp_path, monkeypatch):
    """Catches: representations keyed by the base model's config key alone (a base model rebuilt with
    other weights served the old model's representations), and a KAE keyed without the content of
    the representations it was trained on."""
    kae = ["+experiment=yinyang_kae", *SMALL, "kae.path.report=false"]
    m1 = run_cfg(kae, tmp_path)
    assert not m1["base/cache_hit"] and not m1["kae/cache_hit"]
    from kaelab.base_model import base_model_key

    base_key = base_model_key(compose_cfg(kae, tmp_path))
    shutil.rmtree(tmp_path / "cache" / "base_model" / base_key)
    from kaelab import base_model as bm

    real = bm.build_classifier

    def reseeded(cfg, dm):
        torch.manual_seed(4321)  # other initial weights under the same config key
        return real(cfg, dm)

    monkeypatch.setattr(bm, "build_classifier", reseeded)
    m2 = run_cfg(kae, tmp_path)
    assert not m2["base/cache_hit"]
    assert m2["base/test_acc"] != m1["base/test_acc"] or m2["kae/state_fvu"] != m1["kae/state_fvu"]
    assert not m2["kae/cache_hit"] and m2["kae/key"] != m1["kae/key"]
    reps = sorted(p for p in (tmp_path / "cache" / "representations").iterdir() if p.is_dir())
    assert len(reps) == 2  # the new model's representations, beside the old ones
    base = bm.base_model(compose_cfg(kae, tmp_path), tmp_path / "w")
    from kaelab.koopman.representations import extract

    newest = max(reps, key=lambda p: p.stat().st_mtime_ns)
    stored = load_file(str(newest / "representations.safetensors"))
    x = base.datamodule.tensors("test")[0]
    fresh = extract(base.trajectory, x, [m2["kae/source_layer"], m2["kae/target_layer"]])
    assert torch.equal(stored[f"test/{m2['kae/target_layer']}"], fresh[m2["kae/target_layer"]])


def _nets(x):
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(Trajectory.of(build_net(RESMLP).eval(), x["train"][:2]))
    return out


def test_representations_follow_the_weights_under_one_base_key(tmp_path):
    """Catches: representations keyed by the base model's key alone: under ONE base key, a network
    with other weights must get its own representations."""
    from kaelab.koopman.representations import cached_representations, extract

    x = {"train": torch.randn(64, 2), "test": torch.randn(32, 2)}
    first_net, second_net = _nets(x)
    cache = ArtifactCache(tmp_path)
    first = cached_representations(cache, "base", first_net, x, ["input_layer", "blocks.1"])
    second = cached_representations(cache, "base", second_net, x, ["input_layer", "blocks.1"])
    assert torch.equal(second["test"]["blocks.1"], extract(second_net, x["test"], ["blocks.1"])["blocks.1"])
    assert not torch.equal(first["test"]["blocks.1"], second["test"]["blocks.1"])
    again = cached_representations(cache, "base", first_net, x, ["input_layer", "blocks.1"])
    assert cache.built_now is False and torch.equal(again["test"]["blocks.1"], first["test"]["blocks.1"])


def test_dmd_layer_scaling_follows_the_weights_under_one_base_key(tmp_path):
    """Catches: cached_scaling keyed by the base model's key alone: a base model rebuilt with other
    weights must not be given the layers trained in front of the old one."""
    from kaelab.dmd.callback import as_dmd_config
    from kaelab.dmd.layer_scaling import cached_scaling, train_scaling

    x = {"train": torch.rand(128, 2)}
    first_net, second_net = _nets(x)
    sc = as_dmd_config({"scaling": {"layer": 1, "n_layers": 2, "epochs": 2, "batch_size": 64}}).scaling
    cached_scaling(first_net, x["train"], sc, tmp_path, "base")
    layers, info = cached_scaling(second_net, x["train"], sc, tmp_path, "base")
    want, want_info = train_scaling(second_net, x["train"], sc)
    assert info["scaling/train_huber"] == want_info["scaling/train_huber"]
    for a, b in zip(layers.state_dict().values(), want.state_dict().values(), strict=True):
        assert torch.equal(a, b)
