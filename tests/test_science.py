"""Tests that fail when the science is wrong (each names the broken implementation it catches).

* preprocessing fitted on the test split (or on all splits) instead of the training split;
* the base model's key left out of the representations' (or the KAE's) cache key, so a second
  base model is handed the first one's representations;
* macro accuracy computed as micro (top-1 over samples) in any of the three places that report it:
  ``kaelab.metrics.accuracy_report``, the base classifier's test step, the surrogate's report.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import compose_cfg, run_cfg
from kaelab.cache import ArtifactCache
from kaelab.metrics import accuracy_report
from kaelab.models import Classifier, Trajectory, build_net
from science_world import KAE as SCIENCE_KAE

SHORT_KAE = SCIENCE_KAE  # the short Yin-Yang base model + KAE of tests/science_world.py


@pytest.fixture(scope="module")
def kae_run(tmp_path_factory):
    """A short Yin-Yang KAE run, and its base model, representations and KAE (from the cache)."""
    from kaelab.koopman.pipeline import trained_kae

    tmp = tmp_path_factory.mktemp("science")
    metrics = run_cfg(SHORT_KAE, tmp)
    cfg = compose_cfg(SHORT_KAE, tmp)
    base, data, art = trained_kae(cfg, tmp / "again")
    assert base.cache_hit and art.cache_hit
    return metrics, base, data, art, cfg


# ------------------------------------------------------------------------------ preprocessing
def test_preprocessing_is_fitted_on_the_training_split(kae_run):
    """Fitted on the training split, the transformed training matrix is centred (column means 0)
    and has Frobenius norm ``kae.scale``; fitted on the test split (or all splits) it is neither."""
    _, _, data, art, cfg = kae_run
    train = data.reps["train"]
    for name, z in (
        ("source", art.prep.transform_source(train[art.source])),
        ("target", art.prep.transform_target(train[art.target])),
    ):
        z = z.double()
        assert z.mean(0).abs().max() < 1e-4 * z.abs().max(), name
        assert abs(torch.linalg.matrix_norm(z).item() - cfg.kae.scale) < 1e-3 * cfg.kae.scale, name
    # the fitted inverse is exact on held-out data too
    test_j = data.reps["test"][art.target]
    back = art.prep.inverse_target(art.prep.transform_target(test_j))
    assert torch.allclose(back, test_j, atol=1e-4 * test_j.abs().max().item())


# -------------------------------------------------------------------------------- cache keys
def test_representations_are_keyed_by_the_base_model(tmp_path):
    from kaelab.koopman.representations import cached_representations, extract

    x = {"train": torch.randn(64, 2), "test": torch.randn(32, 2)}
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = build_net(dict(_target_="kaelab.models.ResMLP", in_dim=2, width=8, n_blocks=2, out_dim=3)).eval()
        nets.append(Trajectory.of(net, x["train"][:2]))
    cache = ArtifactCache(tmp_path)
    first = cached_representations(cache, "base-a", nets[0], x, ["input_layer", "blocks.1"])
    second = cached_representations(cache, "base-b", nets[1], x, ["input_layer", "blocks.1"])
    fresh = extract(nets[1], x["test"], ["blocks.1"])["blocks.1"]
    assert torch.equal(second["test"]["blocks.1"], fresh)  # not the first base model's
    assert not torch.equal(first["test"]["blocks.1"], second["test"]["blocks.1"])
    assert len([p for p in (tmp_path / "representations").iterdir() if p.is_dir()]) == 2


def test_kae_key_includes_the_base_model(tmp_path):
    from kaelab.koopman.pipeline import kae_key

    cfg = compose_cfg([], tmp_path)
    sizes = {"train": 10, "test": 10}
    assert kae_key(cfg, "base-a", "input_layer", "blocks.4", sizes) != kae_key(
        cfg, "base-b", "input_layer", "blocks.4", sizes
    )


# ----------------------------------------------------------------------------- macro accuracy
def _imbalanced():
    """Class 0: 9 samples, all right; class 1: 1 sample, wrong. Micro 0.9, macro 0.5."""
    target = torch.tensor([0] * 9 + [1])
    preds = torch.zeros(10, dtype=torch.long)
    return preds, target


def test_accuracy_report_macro_is_the_mean_over_classes():
    preds, target = _imbalanced()
    r = accuracy_report(preds, target, 2, prefix="x/")
    assert r["x/acc"] == pytest.approx(0.9)
    assert r["x/acc_macro"] == pytest.approx(0.5)
    assert r["x/acc_per_class"] == pytest.approx([1.0, 0.0])


def test_classifier_test_metrics_macro_is_the_mean_over_classes():
    preds, target = _imbalanced()
    logits = nn.functional.one_hot(preds, 2).float()
    module = Classifier(dict(_target_="kaelab.models.MLP", in_dim=2, hidden=[2], out_dim=2), dict(lr=0.1, momentum=0.9,
                        weight_decay=0.0, warmup_frac=0.2), 2)  # fmt: skip
    module.net = nn.Identity()  # the logits are the inputs
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, DataLoader(TensorDataset(logits, target), batch_size=4), verbose=False)
    assert module.test_results["test/acc"] == pytest.approx(0.9)
    assert module.test_results["test/acc_macro"] == pytest.approx(0.5)


def test_reported_macro_accuracies_are_means_of_per_class(kae_run):
    """In the stage outputs: macro = mean of per-class, micro = the class-count-weighted mean."""
    metrics, base, data, _, _ = kae_run
    checks = [(metrics, p, s) for p in ("base/", "kae/") for s in ("test", "train")]
    checks.append((base.metrics, "", "test"))
    for m, prefix, split in checks:
        key = f"{prefix}{split}_" if prefix else "test/"
        per_class = torch.tensor(m[f"{key}acc_per_class"], dtype=torch.float64)
        counts = torch.bincount(data.labels[split], minlength=len(per_class)).double()
        assert m[f"{key}acc_macro"] == pytest.approx(per_class.mean().item(), abs=1e-6), key
        assert m[f"{key}acc"] == pytest.approx((per_class * counts).sum().item() / counts.sum().item(), abs=1e-6), key
    assert len(set(torch.bincount(data.labels["test"]).tolist())) > 1  # imbalanced: the two differ
