"""The edit stage (task=edit) against an independent recomputation: which split its statistics and
its accuracies come from, what its statistics are keyed by, and compare_retrain's retrained model.

Wrong implementations these catch (each test names its own):
* the key statistics (C0, the class centroids) computed from the test split;
* the before / after accuracies scored on the training split the edit was made on;
* the statistics cached under a key without the KAE (another KAE is handed the first one's);
* ``data.exclude_classes`` left out of the base model's key, so that compare_retrain's model
  "retrained without the class" is the cached full model.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from kaelab.data import build_datamodule
from kaelab.editing.statistics import KeyStatistics, key_statistics
from kaelab.koopman.kae import KoopmanAutoencoder
from kaelab.koopman.surrogate import predict_target
from science_world import (
    EDIT,
    in_world,
    world_artifacts,
    world_cache_fixture,  # noqa: F401 (registers the fixture world_cache)
)


def surrogate_accuracies(base, art, x_i, labels, K, forget):
    """The surrogate's predictions with operator ``K``, and its accuracy on / off the forgotten classes."""
    pred = base.trajectory.forward_from(art.target, predict_target(art.kae, art.prep, x_i, K=K)).argmax(1)
    fmask = torch.isin(labels, torch.tensor(forget))
    acc = lambda m: (pred[m] == labels[m]).double().mean().item()  # noqa: E731
    return pred, acc(fmask), acc(~fmask)


def test_edit_accuracies_are_the_saved_operators_on_the_test_split(tmp_path, world_cache):
    """Recomputes every before / after accuracy from the saved operators (edit/operator.safetensors)
    on the TEST split of an independently built datamodule. Catches the accuracies scored on the
    training split (or with the other operator), and a histogram of the forgotten samples'
    predictions counted over another split."""
    m = in_world([*EDIT, "edit.target_class=0"], tmp_path, world_cache)
    cfg, base, data, art = world_artifacts([*EDIT, "edit.target_class=0"], tmp_path)
    dm = build_datamodule(cfg.data)
    dm.setup()
    x_test, y_test = dm.tensors("test")
    assert torch.equal(data.inputs["test"], x_test) and torch.equal(data.labels["test"], y_test)
    ops = load_file(str(tmp_path / "run" / "edit" / "operator.safetensors"))
    x_i = data.reps["test"][art.source]
    for tag in ("before", "after"):
        pred, forget_acc, retain_acc = surrogate_accuracies(base, art, x_i, y_test, ops[f"K_{tag}"], [0])
        assert m[f"edit/forget_acc_{tag}"] == pytest.approx(forget_acc, abs=1e-6), tag
        assert m[f"edit/retain_acc_{tag}"] == pytest.approx(retain_acc, abs=1e-6), tag
        assert m[f"edit/acc_{tag}"] == pytest.approx((pred == y_test).double().mean().item(), abs=1e-6), tag
    assert m["edit/forget_predicted_as"] == torch.bincount(pred[y_test == 0], minlength=3).tolist()
    assert sum(m["edit/forget_predicted_as"]) == int((y_test == 0).sum())  # the test split's class 0
    with torch.no_grad():
        base_pred = base.net(x_test).argmax(1)
    assert m["base/acc"] == pytest.approx((base_pred == y_test).double().mean().item(), abs=1e-6)


def test_edit_statistics_are_those_of_the_training_split(tmp_path, world_cache):
    """The cached per-class statistics (EMMET's C0 and the centroid targets' class means) equal a
    pass over the TRAINING pairs made here. Catches them computed from the test split (or from the
    x_j side, or without the preprocessing)."""
    in_world([*EDIT, "edit.target_class=1"], tmp_path, world_cache)
    _, _, data, art = world_artifacts([*EDIT, "edit.target_class=1"], tmp_path)
    entries = [p for p in (world_cache / "edit_stats").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(entries) == 1  # one KAE in the world: one entry
    stats = KeyStatistics.from_state_dict(load_file(str(entries[0] / "statistics.safetensors")))
    train = data.reps["train"]
    x_i, x_j = art.prep.transform_source(train[art.source]), art.prep.transform_target(train[art.target])
    want = key_statistics(art.kae, x_i, x_j, data.labels["train"], data.num_classes)
    assert stats.count.tolist() == torch.bincount(data.labels["train"], minlength=3).tolist()
    torch.testing.assert_close(stats.gram, want.gram, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(stats.output_sum, want.output_sum, rtol=1e-6, atol=1e-8)


def fake_kae_artifact(seed: int, key: str, content: str):
    torch.manual_seed(seed)
    return SimpleNamespace(kae=KoopmanAutoencoder(2, [4], 3, 5), key=key, content_hash=content)


def test_edit_statistics_follow_the_kae_they_were_computed_with(tmp_path):
    """Three KAEs in one cache: another key, or the same key with other content (a KAE rebuilt),
    gets its own statistics. Catches the statistics keyed without the KAE's key or content hash."""
    from kaelab.editing.pipeline import cached_key_statistics

    cfg = OmegaConf.create({"paths": {"cache_dir": str(tmp_path)}})
    g = torch.Generator().manual_seed(0)
    x_i, x_j, labels = torch.randn(60, 2, generator=g), torch.randn(60, 2, generator=g), torch.arange(60) % 3
    arts = [
        fake_kae_artifact(0, "kae-a", "c1"),
        fake_kae_artifact(1, "kae-b", "c1"),
        fake_kae_artifact(2, "kae-a", "c2"),
    ]
    for art in arts:
        stats, hit, _ = cached_key_statistics(cfg, art, x_i, x_j, labels, 3)
        assert not hit
        want = key_statistics(art.kae, x_i, x_j, labels, 3)
        torch.testing.assert_close(stats.gram, want.gram)
    again, hit, _ = cached_key_statistics(cfg, arts[0], x_i, x_j, labels, 3)
    assert hit and torch.equal(again.gram, key_statistics(arts[0].kae, x_i, x_j, labels, 3).gram)


def test_compare_retrain_trains_a_model_that_never_saw_the_class(tmp_path, world_cache):
    """edit.compare_retrain=true end to end: the retrained model is another cache entry (its key is
    not the base model's, its manifest excludes the class) and it never predicts the class it never
    saw, which the base model does. Catches ``data.exclude_classes`` left out of the base model's
    key (the "retrained" model is the cached full one) and a retrain that drops nothing."""
    from kaelab.base_model import base_model_key

    overrides = [*EDIT, "edit.target_class=0", "edit.compare_retrain=true"]
    m = in_world(overrides, tmp_path, world_cache)
    cfg = world_artifacts(overrides, tmp_path)[0]
    assert m["base/acc"] > 0.8  # the world's base model learned the task (not, e.g., from shuffled labels)
    assert m["base/forget_acc"] > 0.3  # the full model knows the class: the check below can tell them apart
    assert m["retrain/key"] != base_model_key(cfg)
    manifest = json.loads((world_cache / "base_model" / m["retrain/key"] / "manifest.json").read_text())
    assert manifest["data"]["exclude_classes"] == [0]
    assert m["retrain/forget_acc"] < 0.02 and m["retrain/acc_per_class"][0] < 0.02
    assert m["retrain/retain_acc"] > 0.5
    assert 0.0 <= m["edit/agreement_retrain_forgotten"] <= 1.0 and m["retrain/time_s"] > 0
