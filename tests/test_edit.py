"""The edit stage (task=edit) end to end on a tiny Yin-Yang setup, its reuse of the cached KAE, and
its bad-input errors."""

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import YY_SMALL_KAE, compose_cfg, run_cfg, run_cli
from kaelab.koopman.pipeline import trained_kae
from kaelab.koopman.surrogate import predict_target

TINY = ["+experiment=yinyang_edit", *YY_SMALL_KAE, "edit.figure_points=300"]


def _digests(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_edit_stage_forgets_reuses_the_cached_kae_and_never_modifies_it(tmp_path):
    first = run_cfg([*TINY, "edit.target_class=0"], tmp_path)
    assert first["kae/cache_hit"] is False  # trained by this run
    assert first["edit/stats_cache_hit"] is False  # the KAE's per-class key statistics, built once
    for key in (
        "edit/acc_per_class_before",
        "edit/acc_per_class_after",
        "edit/forget_acc_before",
        "edit/forget_acc_after",
        "edit/retain_acc_before",
        "edit/retain_acc_after",
        "edit/forget_predicted_as",
        "edit/spectral_radius_before",
        "edit/spectral_radius_after",
        "edit/time_s",
    ):
        assert key in first, key
    # the surrogate gets the Yin class right before the edit, and loses much of it after
    assert first["edit/forget_acc_before"] > 0.8
    assert first["edit/forget_acc_after"] < first["edit/forget_acc_before"] - 0.3
    assert first["edit/retain_acc_after"] > first["edit/retain_acc_before"] - 0.05
    run = tmp_path / "run"
    ops = load_file(str(run / "edit" / "operator.safetensors"))
    # recomputed from the saved operator on the test split (not read back from the same metrics)
    base, data, art = trained_kae(compose_cfg([*TINY, "edit.target_class=0"], tmp_path), tmp_path / "again")
    labels = data.labels["test"]
    x_j_hat = predict_target(art.kae, art.prep, data.reps["test"][art.source], K=ops["K_after"])
    pred = base.trajectory.forward_from(art.target, x_j_hat).argmax(1)[labels == 0]
    assert first["edit/forget_acc_after"] == pytest.approx((pred == 0).double().mean().item(), abs=1e-6)
    assert first["edit/acc_per_class_after"][0] == pytest.approx((pred == 0).double().mean().item(), abs=1e-6)
    assert first["edit/forget_predicted_as"] == torch.bincount(pred, minlength=3).tolist()
    assert not torch.equal(ops["K_before"], ops["K_after"])
    assert (run / "edit" / "observable_pcs.png").stat().st_size > 10_000
    assert json.loads((run / "metrics.json").read_text())["edit/forget_acc_after"] == first["edit/forget_acc_after"]

    kae_dir = next(p for p in (tmp_path / "cache" / "kae").iterdir() if p.is_dir() and not p.name.startswith("."))
    before = _digests(kae_dir)
    (tmp_path / "second").mkdir()
    (tmp_path / "second" / "cache").symlink_to(tmp_path / "cache")
    second = run_cfg([*TINY, "edit.target_class=[0,1]", "edit.targets=nearest_retained_centroid"], tmp_path / "second")
    assert second["kae/cache_hit"] is True and second["base/cache_hit"] is True
    assert second["kae/key"] == first["kae/key"]
    assert second["edit/stats_cache_hit"] is True  # another target, the same statistics
    assert second["edit/target_class"] == [0, 1]
    assert second["edit/forget_acc_after"] < second["edit/forget_acc_before"]
    assert _digests(kae_dir) == before  # byte-identical after two edits


def test_bad_edit_input_through_the_real_cli_is_one_line_error_and_leaves_cache_untouched(tmp_path):
    """One case end to end in a subprocess (tests/test_bad_input.py runs the edit stage's other bad
    inputs in-process)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "sentinel.txt").write_text("x")
    before = _digests(cache)
    res = run_cli([*TINY, "edit.target_class=3", f"paths.cache_dir={cache}"], tmp_path, timeout=300)
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("kaelab: error:")]
    assert len(errors) == 1 and "edit.target_class=3 is out of range" in errors[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert _digests(cache) == before
