"""Persistence backends by ``_target_``: a user's class defined here answers in a topology run and
in the pure functions, by config alone; the built-in names are shorthands for the same configs."""

import numpy as np
import pytest
from test_topology_pipeline import TINY

from conftest import run_cfg
from kaelab.errors import ConfigError
from kaelab.topology import betti as B
from kaelab.topology.backends import BUILTIN, GudhiBackend, MSTBackend, resolve_backend

FIXED = f"{__name__}.FixedBackend"


class FixedBackend:
    """A backend that answers the same diagram for every cloud: ``components`` classes of
    dimension 0 and ``loops`` of dimension 1, all alive from 0 to the end."""

    def __init__(self, components: int = 7, loops: int = 2):
        self.components, self.loops = components, loops

    def diagrams(self, points, maxdim=1, max_edge_length=np.inf):
        bars = [np.array([[0.0, np.inf]] * self.components), np.array([[0.0, np.inf]] * self.loops)]
        return bars[: maxdim + 1]


def test_user_backend_by_target_alone_answers_in_a_topology_run(tmp_path):
    """``topology.backend`` and ``topology.h1_backend`` as ``_target_`` configs of a class kaelab
    does not know: every beta_0 of the run (layers, KAE steps, curves) and the curves' beta_1 are
    its answer. Fails if a config is still dispatched on built-in names, if the backend's own
    arguments are dropped, or if some measurement bypasses the configured backend."""
    backend = f"{{_target_:{FIXED},components:5,loops:3}}"
    m = run_cfg([*TINY, f"topology.backend={backend}", f"topology.h1_backend={backend}", "topology.figures=false"],
                tmp_path)  # fmt: skip
    assert m["topology/backend"] == FIXED
    assert m["topology/beta0_layers"] == [5] * 6
    assert m["topology/beta0_steps"] == [5] * 13
    assert m["topology/curves/original/beta0_max"] == 5 and m["topology/curves/observable/beta0_max"] == 5
    assert m["topology/curves/original/beta1_max"] == 3
    assert m["topology/curves/distance"] == 0.0  # the same answer in both spaces


def test_pure_functions_take_a_name_a_config_or_an_object():
    """``betti.beta0``/``betti_numbers`` with a user object, its ``_target_`` config, and a mixed
    pair (MST for beta_0, the user's for beta_1). Fails if the functions accept only names."""
    x = np.random.default_rng(0).normal(size=(30, 3))
    assert B.beta0(x, 0.1, FixedBackend(components=4)) == 4
    assert B.beta0(x, 0.1, {"_target_": FIXED, "components": 6}) == 6
    exact = B.beta0(x, 0.5, "mst")
    assert B.betti_numbers(x, 0.5, 1, "mst", h1_backend=FixedBackend(loops=9)) == {0: exact, 1: 9}
    assert B.beta0(x, 0.5, {"_target_": BUILTIN["gudhi"]}) == exact


def test_builtin_names_are_shorthands_for_target_configs():
    """A name builds the class its BUILTIN path names, with the stage-wide ``collapse`` only where
    the class takes it. Fails if a name were dispatched by hand to something else."""
    assert resolve_backend("gudhi", collapse=True) == GudhiBackend(collapse=True)
    assert resolve_backend({"_target_": BUILTIN["gudhi"], "collapse": False}, collapse=True) == GudhiBackend()
    assert resolve_backend("mst", collapse=True) == MSTBackend()


@pytest.mark.parametrize(
    "spec,match",
    [
        ("ripser", "unknown topology backend"),
        ({"_target_": "no.such.Backend"}, r"backend._target_='no.such.Backend' cannot be imported"),
        ({"_target_": FIXED, "colour": 1}, "takes no argument 'colour'"),
        ({"_target_": "builtins.dict"}, "no persistence backend"),
        (3, "a int is no persistence backend"),
    ],
)
def test_bad_backend_is_one_line_config_error(spec, match):
    with pytest.raises(ConfigError, match=match) as err:
        B.beta0(np.zeros((3, 2)), 0.1, spec)
    assert "\n" not in str(err.value)


def test_backend_answering_too_few_dimensions_is_named():
    """A backend that returns only dimension 0 when asked for beta_1 is a one-line error naming
    it, not an IndexError deep in the curve code."""
    with pytest.raises(ConfigError, match="backend OnlyH0 gave 1 diagram"):
        B.betti_numbers(np.zeros((3, 2)), 0.1, 1, "mst", h1_backend=OnlyH0())


class OnlyH0(FixedBackend):
    def diagrams(self, points, maxdim=1, max_edge_length=np.inf):
        return super().diagrams(points, 0, max_edge_length)
