"""The ``topology`` group's one check (``check_topology_config``, next to its schema) and the
defaults the schema shares with the pure functions."""

import inspect
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_topology_pipeline import TINY

from conftest import REPO, run_cfg
from kaelab.errors import ConfigError
from kaelab.topology import backends
from kaelab.topology import betti as B
from kaelab.topology.config import FLOAT_KEYS, SIZE_KEYS, TopologyConfig, check_topology_config


def topology(**values):
    return OmegaConf.merge(OmegaConf.structured(TopologyConfig), values)


def one_line_error(tc, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        check_topology_config(tc)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.5])
def test_non_finite_or_negative_float_is_rejected(key, value):
    """Catches a check written as ``value < 0`` alone (NaN passes it) or one that forgets a key."""
    one_line_error(topology(**{key: value}), rf"topology\.{key}=")


@pytest.mark.parametrize("key", SIZE_KEYS)
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_size_is_rejected(key, value):
    one_line_error(topology(**{key: value}), rf"topology\.{key}={value} must be an integer >= ")


@pytest.mark.parametrize(
    "values,match",
    [
        ({"eps_min": 0.5, "eps_max": 0.5}, r"topology\.eps_max=0\.5 must be larger"),
        ({"maxdim": 2}, r"topology\.maxdim=2"),
        ({"split": "holdout"}, r"topology\.split must be one of"),
        ({"backend": "ripser"}, "unknown topology backend topology.backend='ripser'"),
        ({"h1_backend": "mst"}, r"topology\.h1_backend=mst computes beta_0 only"),
        ({"backend": {"_target_": "no.such.Backend"}}, r"topology\.backend\._target_='no\.such\.Backend'"),
        ({"backend": {"_target_": "kaelab.topology.backends.MSTBackend", "collapse": True}}, "takes no argument"),
        ({"reference_layers": [10, 0]}, r"topology\.reference_layers=\[10, 0\]"),
    ],
)
def test_other_bad_settings(values, match):
    one_line_error(topology(**values), match)


@pytest.mark.parametrize("path", sorted((REPO / "conf" / "topology").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_and_the_schema_defaults_pass(path: Path):
    """Catches a check stricter than the configs kaelab ships (e.g. rejecting eps_max: null)."""
    check_topology_config(OmegaConf.structured(TopologyConfig))
    shipped = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(path)).items() if k != "defaults"}
    check_topology_config(topology(**shipped))


@pytest.mark.parametrize(
    "override", ["topology.layer_eps=nan", "topology.eps_max=inf", "topology.curve_points=0", "topology.h1_backend=mst"]
)
def test_bad_setting_fails_before_any_training(override, tmp_path):
    """Through a whole run: the check comes before the base model is trained (no cache)."""
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        run_cfg([*TINY, override], tmp_path)
    assert not (tmp_path / "cache").exists()


def test_schema_and_function_defaults_agree():
    """Where TopologyConfig and the pure functions share a setting, one default: fails if one side
    is changed alone (a notebook call and a run with the default config would then disagree)."""
    schema = TopologyConfig()
    for fn in (B.persistence_diagrams, B.betti_curves, B.betti_numbers):
        params = inspect.signature(fn).parameters
        assert params["backend"].default == schema.backend, fn.__name__
        assert params["collapse"].default == schema.collapse_edges, fn.__name__
        assert params["maxdim"].default == schema.maxdim, fn.__name__
    assert inspect.signature(B.beta0).parameters["backend"].default == schema.backend
    assert inspect.signature(B.beta1).parameters["backend"].default == schema.h1_backend
    for fn in (B.diagrams_gudhi, B.diagrams_giotto):
        assert inspect.signature(fn).parameters["collapse"].default == schema.collapse_edges, fn.__name__
    assert backends.GudhiBackend().collapse == backends.GiottoBackend().collapse == schema.collapse_edges
    assert B.DEFAULT_H1_BACKEND == schema.h1_backend  # beta_1 when the beta_0 backend (the MST) has none
