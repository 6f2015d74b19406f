"""The artifact-cache keys of the built-in experiments are pinned: a change to how configs are
written or hashed must not silently re-key cached base models, representations and KAEs (the MNIST
base model alone is ~50 min of training). A deliberate change bumps ``kaelab.cache.KEY_SCHEMA``
and re-pins these: old entries are then rebuilt, never misread.

Representations and KAEs are keyed by their parent's content too (the base model's weights, the
representations a KAE trains on): the pins take fixed parent content hashes, so that they pin how
the config is keyed given the same parents."""

from pathlib import Path

import pytest

from conftest import compose_cfg

SPLITS = {
    "yinyang": {"train": 5000, "val": 1000, "test": 1000},
    "mnist": {"train": 55000, "val": 5000, "test": 10000},
}
WEIGHTS = "0123456789abcdef"  # a fixed content hash of the base model's weights
INPUTS = "fedcba9876543210"  # a fixed content hash of the representations the KAE trains on
BF16 = "trainer.precision=bf16-mixed"
SUM = "kae.recon_reduction=sum"
# experiment, overrides -> (base model key, representations key, KAE key); None: no KAE stage
PINNED = {
    ("yinyang_kae", ()): ("e753a8a59b02125f", "a98d925b94db8ba0", "1c954c734ad82173"),
    # the MNIST experiments' precision is auto: pinned at what it resolves to on bf16 hardware
    ("mnist_kae", ("seed=0", BF16)): ("b16209a1e1cb7a6b", "2cd2f49185b98c18", "effb9f735feb8010"),
    ("mnist_kae", ("seed=0", BF16, SUM)): ("b16209a1e1cb7a6b", "2cd2f49185b98c18", "680429ff7ab37f99"),
    ("yinyang_mlp", ()): ("e753a8a59b02125f", None, None),
    ("mnist_resmlp_dmd", (BF16,)): ("b16209a1e1cb7a6b", None, None),
    ("yinyang_dmd", ()): ("d3bce38d9866b0f9", None, None),
}


@pytest.mark.parametrize(("experiment", "overrides"), list(PINNED), ids=[" ".join([e, *o]) for e, o in PINNED])
def test_builtin_cache_keys_are_unchanged(experiment, overrides, tmp_path):
    from kaelab.base_model import base_model_key
    from kaelab.koopman.pipeline import kae_key, kae_layers
    from kaelab.koopman.representations import representations_key

    cfg = compose_cfg([f"+experiment={experiment}", *overrides], tmp_path, Path("/nonexistent"))
    want_base, want_reps, want_kae = PINNED[experiment, overrides]
    assert base_model_key(cfg) == want_base
    if want_kae is None:
        return
    src, tgt = kae_layers(cfg)
    sizes = SPLITS[cfg.data.name]
    assert representations_key(want_base, WEIGHTS, [src, tgt], sizes) == want_reps
    assert kae_key(cfg, want_base, src, tgt, sizes, INPUTS) == want_kae


def test_a_changed_setting_changes_the_key(tmp_path):
    """The pins above are not vacuous: the key does follow the config."""
    from kaelab.base_model import base_model_key

    cfg = compose_cfg(["+experiment=yinyang_mlp", "model.net.width=12"], tmp_path)
    assert base_model_key(cfg) != PINNED["yinyang_mlp", ()][0]


def test_derived_keys_follow_their_parents_content(tmp_path):
    """The pins above are given fixed parents: another parent content gives another key."""
    from kaelab.koopman.pipeline import kae_key, kae_layers
    from kaelab.koopman.representations import representations_key

    cfg = compose_cfg(["+experiment=yinyang_kae"], tmp_path, Path("/nonexistent"))
    src, tgt = kae_layers(cfg)
    sizes, base = SPLITS["yinyang"], PINNED["yinyang_kae", ()][0]
    layers = [src, tgt]
    assert representations_key(base, WEIGHTS, layers, sizes) != representations_key(base, "other", layers, sizes)
    assert kae_key(cfg, base, src, tgt, sizes, INPUTS) != kae_key(cfg, base, src, tgt, sizes, "other")
