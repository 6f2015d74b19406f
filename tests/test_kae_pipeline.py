"""task=kae end to end on Yin-Yang: surrogate above chance, cached base model reused."""

import json

from conftest import YY_SMALL_KAE, run_cfg

SHORT = ["+experiment=yinyang_kae", *YY_SMALL_KAE]
KEYS = [
    "base/test_acc",
    "base/test_acc_macro",
    "kae/test_acc",
    "kae/test_acc_macro",
    "kae/test_acc_per_class",
    "kae/agreement",
    "kae/state_fvu",
    "kae/loss_recon",
    "kae/loss_linear",
    "kae/loss_state",
    "kae/loss_iso",
]


def test_short_yinyang_kae_run_and_cache_reuse(tmp_path):
    first = run_cfg(SHORT, tmp_path)
    for key in KEYS:
        assert key in first, key
    assert first["base/test_acc"] > 0.85
    assert first["kae/test_acc"] > 0.6  # chance ~0.36
    assert first["kae/agreement"] > 0.6 and 0.0 <= first["kae/state_fvu"] < 0.5
    assert len(first["kae/test_acc_per_class"]) == 3
    assert all(first[f"kae/loss_{t}"] > 0 for t in ("recon", "linear", "state", "iso"))
    assert first["base/cache_hit"] is False  # trained here
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["kae/test_acc"] == first["kae/test_acc"]

    second_dir = tmp_path / "second"
    second_dir.mkdir()
    (second_dir / "cache").symlink_to(tmp_path / "cache")
    second = run_cfg([*SHORT, "seed=1", "kae.lambdas.iso=0.5"], second_dir)
    assert second["base/cache_hit"] is True
    assert second["base/test_acc"] == first["base/test_acc"]
    assert len(list((tmp_path / "cache" / "base_model").glob("*/model.ckpt"))) == 1
    assert len(list((tmp_path / "cache" / "representations").glob("*/*.safetensors"))) == 1
    assert second["kae/test_acc"] != first["kae/test_acc"] or second["kae/loss_iso"] != first["kae/loss_iso"]


def test_a_diverged_kae_is_flagged(caplog):
    """An MNIST KAE whose losses spiked at the lr peak (state FVU 274, surrogate acc 0.11) must not
    pass silently: everything downstream reuses it from the cache."""
    from types import SimpleNamespace

    from kaelab.koopman.pipeline import warn_if_diverged

    art = SimpleNamespace(key="k", path="cache/kae/k")
    bad = {"kae/state_fvu": 273.7, "kae/test_acc": 0.113, "base/test_acc": 0.992}
    warn_if_diverged(bad, art)
    assert bad["kae/diverged"] is True and "training diverged" in caplog.text
    good = {"kae/state_fvu": 0.04, "kae/test_acc": 0.992, "base/test_acc": 0.992}
    warn_if_diverged(good, art)
    assert good["kae/diverged"] is False
