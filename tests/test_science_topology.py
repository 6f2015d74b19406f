"""The topology stage's KAE steps and subsamples against an independent recomputation on the small
Yin-Yang world, and the eps matched to a reference beta_0 (tests/test_topology_pipeline.py has the
stage's layers, curves, figures and the train-fitted preprocessing).

Wrong implementations these catch:
* the KAE's decoded steps started from x_j's points instead of x_i's;
* ``topology.seed`` ignored by the subsample (every seed measures the same points);
* the eps matched to the reference's beta_0 one MST edge off.
"""

from __future__ import annotations

import numpy as np
import torch

from kaelab.topology import betti as B
from kaelab.topology.pipeline import eps_for_beta0
from science_world import (
    WORLD,
    in_world,
    world_artifacts,
    world_cache_fixture,  # noqa: F401 (registers the fixture world_cache)
)

TOPOLOGY = [
    "+experiment=yinyang_topology",
    *WORLD,
    "topology.n_points=200",
    "topology.seed=3",
    "topology.layers=false",
    "topology.curves=false",
    "topology.figures=false",
]


def test_kae_steps_are_decoded_from_x_i_of_the_seeded_subsample(tmp_path, world_cache):
    """beta_0 of every decoded step phi^-1(A^t phi(x_i)), t = 0..k, recomputed from the cached KAE
    on the subsample that ``topology.seed`` draws from the test split."""
    m = in_world(TOPOLOGY, tmp_path, world_cache)
    cfg, _, data, art = world_artifacts(TOPOLOGY, tmp_path)
    test = data.reps["test"]
    idx = B.subsample_indices(len(data.inputs["test"]), 200, 3)
    assert not torch.equal(idx, B.subsample_indices(len(data.inputs["test"]), 200, 0))  # the seed matters
    with torch.no_grad():
        decoded = art.kae.eval().trajectory(art.prep.transform_source(test[art.source][idx]))[1]
    want = [B.beta0(state, cfg.topology.step_eps) for state in decoded]
    assert m["topology/beta0_steps"] == want
    with torch.no_grad():
        from_xj = art.kae.trajectory(art.prep.transform_source(test[art.target][idx]))[1]
    assert [B.beta0(s, cfg.topology.step_eps) for s in from_xj] != want  # the data tells x_i from x_j


def test_eps_matched_to_a_reference_beta0_is_the_smallest_that_gives_it():
    """MST edges 1, 2, 3: beta_0 is 4 below 1, 3 on [1, 2), 2 on [2, 3), 1 from 3 on (an edge of
    length eps joins its components at eps)."""
    lengths = np.array([2.0, 1.0, 3.0])
    assert [eps_for_beta0(lengths, t) for t in (1, 2, 3, 4)] == [3.0, 2.0, 1.0, 0.0]
    assert eps_for_beta0(lengths, 5) is None
