"""DMDReplacement without Hydra: built from keywords, run on a Trajectory and in-memory tensors."""

from __future__ import annotations

import pytest
import torch
from test_dmd import linear_net, linear_system

from kaelab.dmd.callback import DMDReplacement
from kaelab.dmd.operator import DelayOperator


@pytest.fixture
def tiny():
    """A 5-stage linear network (6 states) and random labels: the exact DMD reproduces it."""
    S, A = linear_system(n=120, steps=6)
    y = torch.randint(0, 3, (120,), generator=torch.Generator().manual_seed(0))
    data = {"train": (S[:60, 0], y[:60]), "val": (S[60:90, 0], y[60:90]), "test": (S[90:, 0], y[90:])}
    return linear_net(A, n_stages=5), data


def test_notebook_run_on_tensors_writes_nothing(tiny, tmp_path, monkeypatch):
    """Catches a study that needs a Hydra config or a datamodule, keyword settings that are
    ignored (h, span in the metrics), a run that writes files without an out_dir, and a hybrid
    left unreachable for the caller (``best.hybrid`` must be the reported network)."""
    traj, data = tiny
    monkeypatch.chdir(tmp_path)
    cb = DMDReplacement(h=1, rank=-1, span=[1, 5], scaling={"n_layers": 0}, dtype="float64", n_fit=0)
    m = cb.run(traj, data)
    assert list(tmp_path.iterdir()) == []
    assert (m["dmd/h"], m["dmd/span_start"], m["dmd/span_end"], m["dmd/layers_replaced"]) == (1, 1, 5, 3)
    assert m["dmd/test_acc"] == m["dmd/base_test_acc"] and m["dmd/test_state_rel_err"] < 1e-6
    assert "dmd/figures" not in m and cb.metrics is m
    x = data["test"][0]
    with torch.no_grad():
        torch.testing.assert_close(cb.best.hybrid(x), traj(x), atol=1e-8, rtol=0)
    assert all(p.requires_grad for p in traj.parameters())  # the caller's network is left as it was


def test_notebook_run_writes_where_asked(tiny, tmp_path):
    """Catches ``out_dir`` given to ``run`` being ignored, and selection on validation data lost
    off the Hydra path."""
    traj, data = tiny
    cb = DMDReplacement(h=1, span=[0, 5], scaling={"n_layers": 0}, grid={"h": [0, 1]}, select="val")
    m = cb.run(traj, data, out_dir=tmp_path / "dmd")
    names = {p.name for p in (tmp_path / "dmd").iterdir()}
    assert {"dmd_grid.csv", "dmd_metrics.json", "dmd_operator.safetensors", "dmd_eigenvalues.png"} <= names
    assert m["dmd/grid_points"] == 2 and m["dmd/val_acc"] == max(r.row["val_acc"] for r in cb.results)
    op, meta = DelayOperator.load(tmp_path / "dmd" / "dmd_operator.safetensors")
    assert (op.h, meta["span_end"]) == (m["dmd/h"], 5)


def test_built_from_a_target_callback_config():
    """The train stage's route (``callbacks.extra.dmd: {_target_: kaelab.dmd.callback.DMDReplacement,
    _recursive_: false, cfg: ${dmd}}``). Catches a callback that cannot be built from a _target_
    config, and nested _target_ settings (the estimator) turned into objects on the way."""
    from kaelab.instantiate import instantiate

    node = {
        "_target_": "kaelab.dmd.callback.DMDReplacement",
        "_recursive_": False,
        "cfg": {"h": 3, "estimator": {"_target_": "pydmd.DMD", "exact": False}},
        "h": 1,
    }
    cb = instantiate(node, "callbacks.extra.dmd")
    assert isinstance(cb, DMDReplacement) and cb.cfg.h == 1
    assert cb.cfg.estimator == {"_target_": "pydmd.DMD", "exact": False} and cb.out_dir is None
