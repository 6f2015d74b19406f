"""The ``dmd`` group's one check (kaelab/dmd/config.py: check_dmd_config) and its defaults."""

from __future__ import annotations

import inspect
import math

import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose_cfg
from kaelab.dmd.callback import DMDReplacement
from kaelab.dmd.config import DMDConfig, ScalingConfig, check_dmd_config
from kaelab.errors import ConfigError

BAD = [
    ({"tikhonov": math.nan}, "dmd.tikhonov=nan must be a finite number"),
    ({"scaling": {"lr": math.inf}}, "dmd.scaling.lr=inf must be a finite number"),
    ({"scaling": {"linear_weight": -math.inf}}, "dmd.scaling.linear_weight=-inf must be a finite number"),
    ({"scaling": {"huber_delta": math.nan}}, "dmd.scaling.huber_delta=nan"),
    ({"scaling": {"init_noise": math.nan}}, "dmd.scaling.init_noise=nan"),
    ({"estimator": {"_target_": "pydmd.DMD", "tikhonov_regularization": math.nan}}, "dmd.estimator"),
    ({"h": -1}, "dmd.h=-1 must be >= 0"),
    ({"h": 11, "scaling": {"n_layers": 10}}, "dmd.h=11 is too long for a trajectory of 12 states"),
    ({"rank": 0}, "dmd.rank must be a positive int or -1"),
    ({"eval_batch_size": 0}, "dmd.eval_batch_size=0 must be >= 1"),
    ({"n_fit": -5}, "dmd.n_fit=-5 must be >= 0"),
    ({"boundary_resolution": 1}, "dmd.boundary_resolution=1 must be >= 2"),
    ({"scaling": {"batch_size": 0}}, "dmd.scaling.batch_size=0 must be >= 1"),
    ({"scaling": {"epochs": 0}}, "dmd.scaling.epochs=0 must be >= 1"),
    ({"scaling": {"width": 0}}, "dmd.scaling.width=0 must be >= 1"),
    ({"scaling": {"n_layers": -1}}, "dmd.scaling.n_layers=-1 must be >= 0"),
    ({"scaling": {"lr": 0.0}}, "dmd.scaling.lr=0.0 must be > 0"),
    ({"scaling": {"linear_weight": 0.1, "n_layers": 2, "linear_h": 3}}, "dmd.scaling.linear_h=3"),
    ({"grid": {"rank": [4, 0]}}, r"dmd.grid.rank\[1\] must be"),
    ({"grid": {"h": [1, -2]}}, r"dmd.grid.h\[1\]=-2"),
    ({"span": [1]}, "dmd.span must be"),
    ({"select": "test"}, "dmd.select must be one of"),
    ({"dtype": "float16"}, "dmd.dtype must be one of"),
    ({"scaling": {"init": "xavier"}}, "dmd.scaling.init must be one of"),
    ({"rollout": "exact"}, "dmd.rollout must be one of"),
    ({"rollout": {"_target_": "nowhere.Rollout"}}, "dmd.rollout._target_='nowhere.Rollout' cannot be imported"),
    ({"estimator": {"_target_": "pydmd.DMD", "bogus": 1}}, "dmd.estimator.bogus"),
    ({"bogus": 1}, "dmd.bogus"),
    ({"h": "two"}, "dmd.h"),
]


@pytest.mark.parametrize("cfg,match", BAD)
def test_bad_dmd_values_are_one_line_config_errors_naming_the_key(cfg, match):
    """Catches a key the check skips (nan / inf floats, non-positive sizes, unknown choices or
    _target_s): each would otherwise fail deep in the study, after the base model's training."""
    with pytest.raises(ConfigError, match=match) as err:
        check_dmd_config(cfg)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=match):  # the callback checks its config when built
        DMDReplacement(cfg)


def test_notebook_overrides_are_checked_like_the_config():
    """Catches keyword overrides of DMDReplacement that bypass the check (or are ignored)."""
    with pytest.raises(ConfigError, match="dmd.scaling.lr=nan"):
        DMDReplacement(scaling={"lr": math.nan})
    cb = DMDReplacement({"h": 3, "scaling": {"epochs": 7}}, h=1, scaling={"n_layers": 0})
    assert (cb.cfg.h, cb.cfg.scaling.n_layers, cb.cfg.scaling.epochs) == (1, 0, 7)
    # without scaling, the scaling's delay settings are not checked against its (absent) layers
    check_dmd_config({"h": 4, "scaling": {"n_layers": 0, "linear_weight": 0.1}})


SHIPPED = [f"dmd={p.stem}" for p in sorted((REPO / "conf" / "dmd").glob("*.yaml"))]
SHIPPED += [f"+dmd/estimator={p.stem}" for p in sorted((REPO / "conf" / "dmd" / "estimator").glob("*.yaml"))]


@pytest.mark.parametrize("override", SHIPPED)
def test_every_shipped_dmd_config_passes_the_check(override, tmp_path):
    """Catches a check stricter than the configs kaelab ships (on the composed Hydra node, whose
    seeds are interpolations of the root config), and one that lets nan through from the CLI."""
    cfg = compose_cfg(["+experiment=yinyang_dmd", override], tmp_path)
    checked = check_dmd_config(cfg.dmd)
    assert checked.h == cfg.dmd.h and checked.fit_seed == cfg.seed
    bad = compose_cfg(["+experiment=yinyang_dmd", override, "dmd.scaling.lr=nan"], tmp_path)
    with pytest.raises(ConfigError, match="dmd.scaling.lr=nan"):
        check_dmd_config(bad.dmd)


def test_api_defaults_are_the_schemas():
    """Catches a function default that drifted from the DMDConfig / ScalingConfig field it mirrors
    (a notebook call and a config run would then differ silently)."""
    import torch

    from kaelab.dmd.hybrid import HybridNet
    from kaelab.dmd.layer_scaling import new_layers
    from kaelab.dmd.operator import DelayOperator, fit_delay_dmd
    from kaelab.dmd.study import DTYPES

    def defaults(fn):
        return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}

    schema = OmegaConf.structured(DMDConfig)
    fit = defaults(fit_delay_dmd)
    for key in ("h", "rank", "tikhonov", "estimator"):
        assert fit[key] == schema[key], key
    assert fit["dtype"] == DTYPES[schema.dtype] == torch.float32
    assert defaults(DelayOperator.rollout)["mode"] == schema.rollout
    assert defaults(DelayOperator.propagator)["mode"] == schema.rollout
    assert defaults(HybridNet.__init__)["rollout"] == schema.rollout
    layers, scaling = defaults(new_layers), OmegaConf.structured(ScalingConfig)
    assert (layers["width"], layers["init"], layers["noise"]) == (scaling.width, scaling.init, scaling.init_noise)
    # DMDReplacement takes DMDConfig's keys as **overrides: it has no defaults of its own for them
    own = set(inspect.signature(DMDReplacement.__init__).parameters) - {"self", "overrides"}
    assert not own & set(schema.keys())
