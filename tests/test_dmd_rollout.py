"""dmd.rollout as a variant: a built-in name (a shorthand for its ``_target_``) or the user's own
``_target_`` config, built with hydra.utils.instantiate (kaelab/dmd/rollout.py)."""

from __future__ import annotations

import pytest
import torch
from test_dmd import linear_net, linear_system

from kaelab.dmd.callback import DMDReplacement
from kaelab.dmd.hybrid import HybridNet
from kaelab.dmd.operator import fit_delay_dmd
from kaelab.dmd.rollout import ROLLOUTS, ReducedRollout, build_rollout
from kaelab.dmd.study import collect_states
from kaelab.errors import ConfigError


class ScaledRollout:
    """A user's rollout: the reduced rollout's prediction times ``factor``; counts its calls."""

    calls = 0

    def __init__(self, factor: float):
        self.factor = factor

    def __call__(self, op, z, steps, all_states=False):
        type(self).calls += 1
        return self.factor * ReducedRollout()(op, z, steps, all_states)


class WrongShapeRollout:
    def __call__(self, op, z, steps, all_states=False):
        return z


def fitted(h: int = 1):
    """(trajectory of a linear network, its states, the exact DMD over the whole span)."""
    S, A = linear_system(n=80, steps=6)
    traj = linear_net(A, n_stages=5)
    states = collect_states(traj, S[:, 0])
    return traj, states, fit_delay_dmd(states, h=h, rank=-1, dtype=torch.float64)


def test_a_users_rollout_by_target_alone_gives_its_prediction():
    """Catches a rollout setting dispatched on built-in names only (a _target_ ignored or
    rejected) and _target_ arguments not passed: the exact DMD on a linear network predicts the
    true states, so the user's rollout must give exactly ``factor`` times them."""
    traj, states, fit = fitted()
    ScaledRollout.calls = 0
    hybrid = HybridNet(traj, fit.operator, (0, 5), {"_target_": f"{__name__}.ScaledRollout", "factor": 0.5})
    x = states[:, 0]
    with torch.no_grad():
        predicted = hybrid.predicted_states(x)
    torch.testing.assert_close(predicted, 0.5 * states[:, 2:], atol=1e-8, rtol=0)
    assert ScaledRollout.calls == 2  # once for the hybrid's propagator, once for predicted_states


def test_a_users_rollout_changes_the_studys_result():
    """Catches ``dmd.rollout`` being read only for the metrics' label: the study's hybrid uses the
    user's rollout (a zero prediction has relative state error exactly 1; the built-in, ~0)."""
    S, A = linear_system(n=120, steps=6)
    traj = linear_net(A, n_stages=5)
    y = torch.randint(0, 3, (120,), generator=torch.Generator().manual_seed(0))
    data = {"train": (S[:80, 0], y[:80]), "test": (S[80:, 0], y[80:])}
    kw = {"h": 1, "span": [0, 5], "scaling": {"n_layers": 0}, "dtype": "float64"}
    builtin = DMDReplacement(**kw).run(traj, data)
    user = {"_target_": f"{__name__}.ScaledRollout", "factor": 0.0}
    ours = DMDReplacement(rollout=user, **kw).run(traj, data)
    assert builtin["dmd/test_state_rel_err"] < 1e-6
    assert ours["dmd/test_state_rel_err"] == pytest.approx(1.0, abs=1e-12)
    assert ours["dmd/rollout"] == f"{__name__}.ScaledRollout"


def test_builtin_names_are_shorthands_for_their_target():
    """Catches a name resolved elsewhere than ROLLOUTS (the name and its _target_ would differ),
    an unknown name passing, and a rollout of the wrong shape reaching the hybrid."""
    _, states, fit = fitted(h=2)
    z = states[:5, :3].flatten(1)
    for name, target in ROLLOUTS.items():
        by_name = fit.operator.rollout(z, 3, name, all_states=True)
        by_target = fit.operator.rollout(z, 3, {"_target_": target}, all_states=True)
        assert torch.equal(by_name, by_target), name
        torch.testing.assert_close(by_name, states[:5, 3:], atol=1e-8, rtol=0)
    with pytest.raises(ConfigError, match=r"dmd\.rollout must be one of \('reduced', 'shift'\)"):
        build_rollout("exact")
    with pytest.raises(ConfigError, match="dmd.rollout: WrongShapeRollout returned"):
        fit.operator.rollout(z, 3, WrongShapeRollout())
