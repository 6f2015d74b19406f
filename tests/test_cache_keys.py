"""The artifact-cache keys of the built-in experiments are pinned: a change to how configs are
written or hashed must not silently re-key cached base models, representations and KAEs (the MNIST
base model alone is ~50 min of training). A deliberate change bumps ``kaelab.cache.KEY_SCHEMA``
and re-pins these: old entries are then rebuilt, never misread."""

from pathlib import Path

import pytest

from conftest import compose_cfg

SPLITS = {
    "yinyang": {"train": 5000, "val": 1000, "test": 1000},
    "mnist": {"train": 55000, "val": 5000, "test": 10000},
}
# experiment, overrides -> (base model key, representations key, KAE key); None: no KAE stage
PINNED = {
    ("yinyang_kae", ()): ("e753a8a59b02125f", "7340f5e412f181fa", "16f85ca3d2714c94"),
    ("mnist_kae", ("seed=0",)): ("62ad5e8f2fca78cf", "618719c2c7b2ce3a", "b5b7b772a06e5e03"),
    ("mnist_kae", ("seed=0", "kae.recon_reduction=sum")): ("62ad5e8f2fca78cf", "618719c2c7b2ce3a", "9fb98cc38fddcfe0"),
    ("yinyang_mlp", ()): ("e753a8a59b02125f", None, None),
    ("mnist_resmlp_dmd", ()): ("62ad5e8f2fca78cf", None, None),
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
    assert representations_key(want_base, [src, tgt], sizes) == want_reps
    assert kae_key(cfg, want_base, src, tgt, sizes) == want_kae


def test_a_changed_setting_changes_the_key(tmp_path):
    """The pins above are not vacuous: the key does follow the config."""
    from kaelab.base_model import base_model_key

    cfg = compose_cfg(["+experiment=yinyang_mlp", "model.net.width=12"], tmp_path)
    assert base_model_key(cfg) != PINNED["yinyang_mlp", ()][0]
