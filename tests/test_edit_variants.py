"""Edit strategies and target rules as ``_target_`` configs: a user's own classes (defined here, not
in kaelab) run through the composed config alone; names are shorthands for kaelab's classes; the
``edit`` group's validation (kaelab.editing.config.check_edit_config) rejects bad input before work;
and the schema's defaults are the library's."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import YY_SMALL_KAE, compose_cfg, run_cfg
from kaelab.editing.config import EditConfig, build_edit_strategy, check_edit_config, variant_name
from kaelab.editing.emmet import emmet
from kaelab.editing.spectral import spectral_unlearn
from kaelab.editing.strategies import STRATEGIES, EditStrategy, Emmet, Spectral
from kaelab.editing.targets import ClassCentroid, NearestRetained, TargetRule, target_rule
from kaelab.editing.unlearning import OperatorEdit, unlearn_classes
from kaelab.errors import ConfigError

TINY = ["+experiment=yinyang_edit", *YY_SMALL_KAE, "edit.figure=false"]
CALLS: list[tuple] = []  # what the user's classes below were given, appended when they run


class ToOneCentroid(TargetRule):
    """A user's rule: every forgotten key to the output centroid of class ``cls``."""

    def __init__(self, cls: int):
        self.cls = cls

    def __call__(self, W, keys_edit, retained):
        CALLS.append(("rule", self.cls, tuple(W.shape)))
        return retained.centroids[self.cls].expand(len(keys_edit), -1).clone()


class KeepOperator(EditStrategy):
    """A user's strategy: leaves K as it is and reports what it was given."""

    def __init__(self, note: str, mu: float, targets: TargetRule):
        self.note, self.mu, self.targets = note, mu, targets

    def edit(self, kae, x_i, x_j, labels, forget, num_classes, cache=None) -> OperatorEdit:
        CALLS.append(("strategy", self.mu, type(self.targets).__name__, list(forget), len(labels)))
        K = torch.linalg.matrix_exp(kae.koopman.G.detach().double())
        edit = unlearn_classes(kae, x_i, x_j, labels, forget, num_classes, self.targets)  # for its EditInfo
        return OperatorEdit(K, K.clone(), edit.info, 0.0, 0.0, 0.0, {"edit/user_note": self.note})


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One cache (base model, KAE, key statistics) for this module's runs."""
    return tmp_path_factory.mktemp("edit_variants_cache")


def _run(overrides: list[str], tmp_path: Path, cache: Path) -> dict:
    return run_cfg([*TINY, *overrides, f"paths.cache_dir={cache}"], tmp_path)


def test_a_users_target_rule_runs_by_target_alone_and_decides_the_edit(tmp_path, shared_cache):
    """Catches a ``_target_`` rule that is ignored (the default rule runs instead: another
    operator), built without its arguments, or not given the retained classes' centroids."""
    CALLS.clear()
    rule = "edit.targets={_target_:test_edit_variants.ToOneCentroid,cls:2}"
    m = _run(["edit.target_class=0", rule], tmp_path / "user", shared_cache)
    assert CALLS == [("rule", 2, (20, 20))]
    assert m["edit/targets"] == "test_edit_variants.ToOneCentroid"
    # the forgotten Yin samples go to the Dots class the rule names
    assert max(range(3), key=lambda c: m["edit/forget_predicted_as"][c]) == 2
    assert m["edit/forget_predicted_as"][2] > 0.5 * sum(m["edit/forget_predicted_as"])
    # ... exactly as kaelab's class_centroid rule sends them there
    ref = _run(
        ["edit.target_class=0", "edit.targets=class_centroid", "edit.redirect_to=2"], tmp_path / "ref", shared_cache
    )
    assert ref["kae/cache_hit"] and ref["edit/stats_cache_hit"]
    ops, ref_ops = (
        load_file(str(p / "run" / "edit" / "operator.safetensors")) for p in (tmp_path / "user", tmp_path / "ref")
    )
    torch.testing.assert_close(ops["K_after"], ref_ops["K_after"], rtol=0, atol=0)
    assert m["edit/forget_acc_after"] == ref["edit/forget_acc_after"]


def test_a_users_strategy_runs_by_target_alone_with_the_groups_keys(tmp_path, shared_cache):
    """Catches a ``_target_`` strategy that is ignored (EMMET runs instead: K changes), one not given
    the ``edit`` group's keys it takes (edit.mu, the built rule of edit.targets), or whose own
    metrics do not reach metrics.json."""
    CALLS.clear()
    strategy = "edit.strategy={_target_:test_edit_variants.KeepOperator,note:hello}"
    m = _run(["edit.target_class=1", strategy, "edit.mu=0.7", "edit.targets=nearest_retained"], tmp_path, shared_cache)
    assert CALLS == [("strategy", 0.7, "NearestRetained", [1], 1000)]  # the training split's 1000 pairs
    assert m["edit/strategy"] == "test_edit_variants.KeepOperator" and m["edit/user_note"] == "hello"
    assert m["edit/delta_rel_norm"] == 0.0 and m["edit/retain_changed"] == 0.0
    assert m["edit/forget_acc_after"] == m["edit/forget_acc_before"]


def _cfg(overrides: list[str], tmp_path: Path):
    return compose_cfg(["+experiment=yinyang_edit", *overrides], tmp_path)


def _check(overrides: list[str], tmp_path: Path) -> list[int]:
    cfg = _cfg(overrides, tmp_path)
    return check_edit_config(cfg.edit, int(cfg.model.net.out_dim), bool(cfg.model.checkpoint))


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["edit.targets={_target_:torch.nn.Identity}"], "edit.targets._target_"),
        (["edit.targets={_target_:kaelab.editing.strategies.Emmet}"], "edit.targets._target_"),
        (["edit.strategy={_target_:kaelab.editing.targets.NearestRetained}"], "edit.strategy._target_"),
        (["edit.targets={_target_:no_such_module.Rule}"], "edit.targets._target_"),
        (["edit.targets={_target_:test_edit_variants.ToOneCentroid}"], "edit.targets.cls"),
        (["edit.targets={_target_:test_edit_variants.ToOneCentroid,cls:1,extra:2}"], "edit.targets.extra"),
        (["edit.strategy={_target_:kaelab.editing.strategies.Emmet,mu:-1.0}"], "edit.strategy.mu"),
        (["edit.targets=7"], "edit.targets"),
        (["edit.redirect_to=1"], "edit.redirect_to"),  # the default targets, nearest_retained_centroid
        (["edit.targets=nearest_retained", "edit.redirect_to=1"], "edit.redirect_to"),
        (["edit.targets={_target_:kaelab.editing.targets.ClassCentroid,redirect_to:0}"], "edit.redirect_to"),
        (
            ["edit.targets={_target_:kaelab.editing.targets.ClassCentroid,redirect_to:1}", "edit.redirect_to=2"],
            "edit.redirect_to",
        ),  # fmt: skip
        *[
            ([f"edit.{key}={bad}"], f"edit.{key}")
            for key in ("mu", "lam", "spectral_ratio", "spectral_scale")
            for bad in ("nan", "inf", "-inf")
        ],  # fmt: skip
    ],
)
def test_bad_edit_group_is_one_line_config_error_naming_the_key(overrides, key, tmp_path):
    """Catches a check that lets a non-rule, non-strategy, non-finite regulariser (nan passes every
    ``< 0`` test), an unused or conflicting redirect_to, or a bad argument reach the edit."""
    with pytest.raises(ConfigError) as err:
        _check(overrides, tmp_path)
    assert key in str(err.value) and "\n" not in str(err.value)


def test_not_a_target_rule_fails_before_any_work(tmp_path):
    """The stage itself: the error comes before the base model or the KAE is trained (nothing cached)."""
    with pytest.raises(ConfigError, match=r"edit.targets._target_='torch.nn.Identity' is not a target rule"):
        run_cfg([*TINY, "edit.targets={_target_:torch.nn.Identity}"], tmp_path)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_names_are_shorthands_for_targets_and_a_yaml_file_selects_one(tmp_path):
    """``edit.strategy=spectral``, ``edit=spectral`` (conf/edit/spectral.yaml, a _target_) and the
    dict build the same object; the group's keys fill its arguments. Catches a name table and a
    _target_ path that disagree, or group keys that do not reach the strategy."""
    built = [
        build_edit_strategy(_cfg([*args, "edit.spectral_ratio=3.5"], tmp_path).edit)
        for args in (
            ["edit.strategy=spectral"],
            ["edit=spectral"],
            ["edit.strategy={_target_:kaelab.editing.strategies.Spectral}"],
        )
    ]
    assert all(type(s) is Spectral and s.ratio == 3.5 and s.scale == 0.0 for s in built)
    assert variant_name(_cfg(["edit=spectral"], tmp_path).edit.strategy, STRATEGIES) == "spectral"  # in metrics.json
    cc = build_edit_strategy(_cfg(["edit.targets=class_centroid", "edit.redirect_to=2", "edit.lam=0.3"], tmp_path).edit)
    assert type(cc) is Emmet and type(cc.targets) is ClassCentroid and cc.targets.redirect_to == 2 and cc.lam == 0.3
    assert cc.label == "class_centroid"
    assert _check(["edit.targets={_target_:test_edit_variants.ToOneCentroid,cls:1}"], tmp_path) == [0]


def test_notebook_rule_object_and_name_give_the_same_edit():
    """``unlearn_classes`` takes a rule's name or a rule object. Catches a name that resolves to
    another rule, or redirect_to not reaching class_centroid."""
    g = torch.Generator().manual_seed(0)
    from kaelab.koopman.kae import KoopmanAutoencoder

    kae = KoopmanAutoencoder(4, [8], 4, 4, dict(recon=1, linear=1, state=1, iso=1)).double()
    x_i = torch.randn(60, 4, generator=g, dtype=torch.float64)
    x_j = x_i + 0.1 * torch.randn(60, 4, generator=g, dtype=torch.float64)
    y = torch.arange(60) % 3
    by_name = unlearn_classes(kae, x_i, x_j, y, [1], 3, targets="class_centroid", redirect_to=2)
    by_rule = unlearn_classes(kae, x_i, x_j, y, [1], 3, targets=ClassCentroid(2))
    torch.testing.assert_close(by_name.K_after, by_rule.K_after, rtol=0, atol=0)
    other = unlearn_classes(kae, x_i, x_j, y, [1], 3, targets=ClassCentroid(0))
    assert not torch.equal(other.K_after, by_rule.K_after)
    assert type(target_rule("nearest_retained")) is NearestRetained
    with pytest.raises(ConfigError, match="edit.targets"):
        target_rule("nearest")


def _defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def test_schema_defaults_are_the_librarys_defaults():
    """EditConfig's defaults are those of the classes and functions it configures, so a run and a
    notebook call with defaults edit alike. Catches one side's default changed without the other.
    ``unlearn_classes`` and ``emmet_edit`` (a notebook's calls) default to the same target rule."""
    schema = {f.name: f.default for f in dataclasses.fields(EditConfig)}
    for cls in (Emmet, Spectral):
        for name, default in _defaults(cls).items():
            assert schema[name] == default, (cls.__name__, name)
    assert set(_defaults(Emmet)) == {"targets", "keys_from", "mu", "lam", "form"}
    assert set(_defaults(Spectral)) == {"spectral_ratio", "spectral_scale", "spectral_max_modes"}
    fn = _defaults(unlearn_classes)
    assert fn["targets"] == schema["targets"]
    assert (fn["mu"], fn["lam"], fn["form"], fn["keys"]) == (
        schema["mu"],
        schema["lam"],
        schema["form"],
        schema["keys_from"],
    )
    assert {k: _defaults(emmet)[k] for k in ("mu", "lam", "form")} == {k: schema[k] for k in ("mu", "lam", "form")}
    sp = _defaults(spectral_unlearn)
    assert (sp["ratio"], sp["scale"], sp["max_modes"]) == (
        schema["spectral_ratio"], schema["spectral_scale"], schema["spectral_max_modes"],
    )  # fmt: skip
