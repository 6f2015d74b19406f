"""DMD layer replacement (Koopman layers paper): delay embedding, operator, hybrid, callback, task."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import FAST, compose_cfg, run_cfg, run_cli
from kaelab.dmd.callback import DMDReplacement, as_dmd_config
from kaelab.dmd.delay import check_delay, delay_embed, pad_states, paired_snapshots
from kaelab.dmd.hybrid import HybridNet, resolve_span
from kaelab.dmd.layer_scaling import new_layers, train_scaling
from kaelab.dmd.operator import fit_delay_dmd
from kaelab.dmd.study import collect_states
from kaelab.errors import ConfigError
from kaelab.models import MLP, Trajectory

# a tiny Yin-Yang binary set-up: the callback / task tests train for seconds, not minutes
TINY_YY = [
    "data.n_train=400",
    "data.n_val=200",
    "data.n_test=300",
    "data.batch_size=100",
    "model.epochs=4",
    "trainer.num_threads=1",
    "dmd.scaling.epochs=3",
    "dmd.scaling.n_layers=3",
    "dmd.scaling.width=null",
    "dmd.h=1",
    "dmd.rank=-1",
    "dmd.n_fit=200",
    "dmd.grid.h=[0,1]",
    "dmd.grid.rank=[4,-1]",
    "dmd.grid.span=[]",
    "dmd.boundary_resolution=40",
    *FAST,
]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch (and, through it, BLAS) thread: the CI box has 2 shared cores, where spinning
    thread pools make small linear algebra many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def linear_system(n: int = 64, steps: int = 7, dim: int = 4, seed: int = 0):
    """Trajectories x_{t+1} = A x_t of a random stable A: ``(S [n, steps, dim], A)``."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(torch.linspace(0.5, 0.95, dim, dtype=torch.float64)) @ Q.T
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    states = [x]
    for _ in range(steps - 1):
        states.append(states[-1] @ A.T)
    return torch.stack(states, 1), A


def linear_net(A: torch.Tensor, n_stages: int) -> Trajectory:
    """A network whose every stage is the linear map A: its depth trajectory is a linear system."""
    stages = []
    for _ in range(n_stages):
        lin = nn.Linear(A.shape[0], A.shape[0], bias=False).double()
        lin.weight.data.copy_(A)
        stages.append(lin)
    head = nn.Linear(A.shape[0], 3).double()
    d = A.shape[0]
    return Trajectory(
        nn.Identity(), stages, head, [f"s{t}" for t in range(n_stages + 1)], [d] * (n_stages + 1), d
    ).eval()


# ------------------------------------------------------------------------------- delay embedding
def test_delay_embedding_shapes_and_order():
    S = torch.arange(3 * 6 * 2, dtype=torch.float64).reshape(3, 6, 2)  # N=3, T+1=6, D=2
    Z = delay_embed(S, h=2)
    assert Z.shape == (3, 4, 6)  # T+1-h windows of (h+1) D
    # z_t = [s_{t-2}, s_{t-1}, s_t], oldest first
    assert torch.equal(Z[1, 0], torch.cat([S[1, 0], S[1, 1], S[1, 2]]))
    assert torch.equal(Z[2, 3], torch.cat([S[2, 3], S[2, 4], S[2, 5]]))
    X, Y = paired_snapshots(S, h=2)
    assert X.shape == Y.shape == (3 * 3, 6)
    # pairs never cross a sample boundary: sample 0's last pair ends on its own last window
    assert torch.equal(X[2], Z[0, 2]) and torch.equal(Y[2], Z[0, 3])
    assert torch.equal(X[3], Z[1, 0]) and torch.equal(Y[3], Z[1, 1])
    assert delay_embed(S, h=0).shape == (3, 6, 2)


def test_pad_states_zero_pads_narrow_states():
    S = pad_states([torch.ones(2, 3), 2 * torch.ones(2, 1)])
    assert S.shape == (2, 2, 3)
    assert torch.equal(S[:, 1], torch.tensor([[2.0, 0.0, 0.0]] * 2))


def test_h_longer_than_trajectory_is_a_config_error():
    with pytest.raises(ConfigError, match=r"dmd\.h=5 is too long for a trajectory of 4 states") as err:
        check_delay(5, 4)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError):
        paired_snapshots(torch.zeros(2, 4, 3), h=3)  # h+1 = 4 seeds leave nothing to predict
    with pytest.raises(ConfigError, match="not a span"):
        resolve_span([3, 2], 5)


# ------------------------------------------------------------------------------------- operator
def test_dmd_recovers_known_linear_operator():
    S, A = linear_system()
    fit = fit_delay_dmd(S, h=0, rank=-1, dtype=torch.float64)
    assert fit.operator.rank == 4
    torch.testing.assert_close(fit.operator.matrix(), A, atol=1e-8, rtol=0)
    eig_true = torch.linalg.eigvals(A).abs().sort().values.numpy()
    assert abs(sorted(abs(fit.operator.eigs)) - eig_true).max() < 1e-8
    # with delays the Hankel snapshots have rank D; the operator still continues every trajectory
    fit2 = fit_delay_dmd(S, h=2, rank=-1, dtype=torch.float64)
    assert fit2.operator.rank == 4
    for mode in ("reduced", "shift"):
        pred = fit2.operator.rollout(S[:, :3].flatten(1), steps=4, mode=mode, all_states=True)
        torch.testing.assert_close(pred, S[:, 3:], atol=1e-8, rtol=0)


def test_rank_truncation_and_invalid_rank():
    S, _ = linear_system()
    assert fit_delay_dmd(S, h=1, rank=2).operator.rank == 2
    assert fit_delay_dmd(S, h=1, rank=100).operator.rank == 4  # capped at the numerical rank
    with pytest.raises(ConfigError, match="dmd.rank"):
        fit_delay_dmd(S, h=1, rank=0)


# --------------------------------------------------------------------------------------- hybrid
@pytest.mark.parametrize("h,span,rollout", [(0, None, "reduced"), (1, None, "shift"), (1, [1, 5], "reduced")])
def test_hybrid_equals_original_on_a_linear_network(h, span, rollout):
    S, A = linear_system(n=80, steps=6)
    traj = linear_net(A, n_stages=5)
    x = S[:, 0]
    states = collect_states(traj, x)
    a, b = resolve_span(span, traj.n_states)
    fit = fit_delay_dmd(states[:, a : b + 1], h=h, rank=-1, dtype=torch.float64)
    hybrid = HybridNet(traj, fit.operator, (a, b), rollout)
    assert hybrid.layers_replaced == b - a - h
    x_new = torch.randn(16, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(hybrid(x_new), traj(x_new), atol=1e-8, rtol=0)


def test_hybrid_ignores_the_replaced_stages_and_uses_the_seed_stages():
    """After fitting, perturbing a stage the operator replaces leaves the hybrid's output unchanged;
    perturbing a stage of the seed window, or one after the span, changes it."""
    torch.manual_seed(0)
    S, A = linear_system(n=80, steps=6)
    traj = linear_net(A, n_stages=5)  # states s_0 .. s_5
    fit = fit_delay_dmd(collect_states(traj, S[:, 0])[:, 0:5], h=1, rank=-1, dtype=torch.float64)
    hybrid = HybridNet(traj, fit.operator, (0, 4), "reduced").eval()  # seeds s_0, s_1; predicts s_2 .. s_4
    assert (hybrid.layers_replaced, hybrid.original_layers_replaced) == (3, 3)
    x = torch.randn(16, 4, dtype=torch.float64)

    def output_after_perturbing(stage: int) -> torch.Tensor:
        weight = traj.stages[stage].weight
        saved = weight.detach().clone()
        with torch.no_grad():
            weight.add_(0.5 * torch.randn_like(weight))
            out = hybrid(x)
            weight.copy_(saved)
        return out

    with torch.no_grad():
        reference = hybrid(x)
    for replaced in (1, 2, 3):  # stages s_1->s_2, s_2->s_3, s_3->s_4: carried by the operator
        assert torch.equal(output_after_perturbing(replaced), reference), replaced
    for used in (0, 4):  # s_0 -> s_1 seeds the delay window; s_4 -> s_5 runs after the span
        assert not torch.allclose(output_after_perturbing(used), reference, atol=1e-6), used


def test_saved_operator_reloads_without_refitting(tmp_path):
    from kaelab.dmd.operator import DelayOperator

    S, A = linear_system(n=80, steps=6)
    traj = linear_net(A, n_stages=5)
    fit = fit_delay_dmd(collect_states(traj, S[:, 0]), h=1, rank=3, dtype=torch.float64)
    fit.operator.save(tmp_path / "op.safetensors", span_start=0, span_end=5)
    op, meta = DelayOperator.load(tmp_path / "op.safetensors")
    assert meta == {"h": 1, "state_dim": 4, "span_start": 0, "span_end": 5}
    np.testing.assert_array_equal(op.eigs, fit.operator.eigs)
    x = torch.randn(8, 4, dtype=torch.float64)
    with torch.no_grad():
        same = HybridNet(traj, op, (0, 5), "reduced")(x)
        torch.testing.assert_close(same, HybridNet(traj, fit.operator, (0, 5), "reduced")(x), atol=0, rtol=0)


# -------------------------------------------------------------------------------- layer scaling
def test_scaled_mlp_trajectory_has_n_plus_2_states_and_same_function():
    torch.manual_seed(0)
    net = MLP(4, [8, 6, 3], 2).eval()
    n = 4
    ident = new_layers(8, n, init="identity", noise=0.0)  # ReLU(I s) = s on the nonnegative input
    x = torch.rand(32, 4)
    traj = Trajectory.of(net, x[:2]).scaled(1, list(ident))
    assert traj.n_states == n + 2 and traj.widths == [8] * (n + 1) + [6]
    with torch.no_grad():
        torch.testing.assert_close(traj(x), net(x))
        assert [s.shape[1] for s in traj.states(x)] == traj.widths
    wide = new_layers(8, n, width=16)
    assert [layer[0].out_features for layer in wide] == [16, 16, 16, 8]


def test_train_scaling_reproduces_the_downstream_activation():
    torch.manual_seed(0)
    net = MLP(4, [8, 6, 3], 2).eval()
    x = torch.rand(512, 4)
    cfg = as_dmd_config({"scaling": {"layer": 1, "n_layers": 3, "epochs": 30, "lr": 3e-3, "batch_size": 128}})
    layers, info = train_scaling(Trajectory.of(net, x[:2]), x, cfg.scaling)
    traj = Trajectory.of(net, x[:2]).scaled(1, list(layers))
    with torch.no_grad():
        target = net.layers[1](net.layers[0](x))
        rel = (traj.run(traj.prefix(x), 0, 4) - target).norm() / target.norm()
    assert rel < 0.2, rel
    assert info["scaling/train_huber"] < 0.05
    assert all(p.requires_grad for p in net.parameters())  # the caller's net is left as it was
    with pytest.raises(ConfigError, match="not a hidden layer"):
        train_scaling(Trajectory.of(net, x[:2]), x, as_dmd_config({"scaling": {"layer": 3}}).scaling)


# ------------------------------------------------------------------------- callback and the task
def test_callback_after_fit_on_tiny_model(tmp_path):
    from kaelab.base_model import fit_classifier

    cfg = compose_cfg(["+experiment=yinyang_dmd", *TINY_YY, "logger=[csv,tensorboard]"], tmp_path)
    cb = DMDReplacement(cfg.dmd, out_dir=tmp_path / "dmd")
    _, _, _, metrics = fit_classifier(cfg, tmp_path / "fit", extra_callbacks=[cb])
    m = cb.metrics
    assert m["dmd/h"] == 1 and m["dmd/span_transitions"] == 4  # n + 1 transitions of n + 2 states
    assert m["dmd/layers_replaced"] == 3  # the operator carries n + 1 - h of them
    assert m["dmd/original_layers_replaced"] == 1  # ... but only the scaled layer is one of the MLP's own
    assert m["dmd/base_test_acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert m["dmd/fit_time_s"] > 0
    assert 1 <= m["dmd/rank"] <= 2 * 8
    saved = json.loads((tmp_path / "dmd" / "dmd_metrics.json").read_text())
    assert saved["dmd/test_acc"] == pytest.approx(m["dmd/test_acc"])
    # the reported point's fitted operator is saved beside the metrics
    from kaelab.dmd.operator import DelayOperator

    op, meta = DelayOperator.load(tmp_path / "dmd" / "dmd_operator.safetensors")
    assert (op.h, meta["span_start"], meta["span_end"]) == (1, 0, 4) and len(op.eigs) == op.rank == m["dmd/rank"]
    for name in ("dmd_eigenvalues.png", "dmd_singular_values.png", "dmd_decision_boundary.png"):
        assert (tmp_path / "dmd" / name).stat().st_size > 1000
    rows = list(csv.DictReader(open(tmp_path / "dmd" / "dmd_grid.csv")))
    assert {(r["h"], r["rank"]) for r in rows} == {("1", "-1"), ("0", "4"), ("0", "-1"), ("1", "4")}
    # the reported accuracy is the reported point's row of the grid, not another point's
    reported = next(r for r in rows if int(r["h"]) == m["dmd/h"] and int(r["rank"]) == m["dmd/rank_requested"])
    assert float(reported["test_acc"]) == pytest.approx(m["dmd/test_acc"])
    # the figures and the scalars also went to the trainer's logger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images, scalars = set(), set()
    for path in (tmp_path / "fit" / "tensorboard").glob("events*"):
        tags = EventAccumulator(str(path)).Reload().Tags()
        images |= set(tags["images"])
        scalars |= set(tags["scalars"])
    assert {"dmd/eigenvalues", "dmd/singular_values", "dmd/decision_boundary"} <= images
    assert "dmd/test_acc" in scalars
    assert all(int(r["layers_replaced"]) == 4 - int(r["h"]) for r in rows)


def test_dmd_task_on_cached_residual_mlp(tmp_path):
    over = [
        "+experiment=yinyang_dmd",
        "data=yinyang",
        "model=resmlp_yinyang",
        "model.net.width=6",
        "model.net.n_blocks=4",
        *TINY_YY,
        "dmd.span=[1,4]",
        "dmd.grid.span=[[0,4],[1,4]]",
        "dmd.select=val",
        "dmd.figures=false",
        "dmd.scaling.n_layers=0",  # the blocks are the trajectory
    ]
    m = run_cfg(over, tmp_path)
    assert m["dmd/n_states"] == 5  # input layer + 4 blocks of the residual MLP
    assert m["dmd/span_transitions"] in (3, 4)
    assert m["dmd/layers_replaced"] == m["dmd/span_transitions"] - m["dmd/h"]
    rows = list(csv.DictReader(open(tmp_path / "run" / "dmd_grid.csv")))
    assert len(rows) == m["dmd/grid_points"] == 8  # 2 h x 2 ranks x 2 spans
    best_val = max(float(r["val_acc"]) for r in rows)
    assert m["dmd/val_acc"] == pytest.approx(best_val)  # selected on validation, never on test
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["dmd/test_acc"] == pytest.approx(m["dmd/test_acc"])
    # a second run reuses the cached base model (same key)
    assert run_cfg(over, tmp_path)["dmd/base_model_key"] == m["dmd/base_model_key"]


def test_cli_h_too_long_exits_with_one_line_error(tmp_path):
    proc = run_cli(["+experiment=yinyang_dmd", "dmd.h=11", *FAST], tmp_path, timeout=120)
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.startswith("kaelab: error:")]
    assert len(err) == 1 and "dmd.h=11 is too long for a trajectory of 12 states" in err[0]
    assert not (tmp_path / "cache").exists()  # rejected before any base model was trained


def test_delay_linearity_error_is_zero_for_linear_dynamics():
    from kaelab.dmd.layer_scaling import delay_linearity_error

    g = torch.Generator().manual_seed(0)
    s0, v = torch.rand(64, 1, 5, generator=g), torch.randn(64, 1, 5, generator=g)
    line = s0 + torch.arange(8.0).view(1, 8, 1) * v  # s_{t+1} = 2 s_t - s_{t-1}: linear with h = 1
    assert delay_linearity_error(line.double(), h=1, ridge=0.0).item() < 1e-8
    assert delay_linearity_error(line.double(), h=1).item() < 1e-2  # the default ridge biases it slightly
    bent = torch.relu(torch.sin(3 * line))  # a nonlinear trajectory of the same shape
    assert delay_linearity_error(bent.double(), h=1).item() > 1e-2


def test_a_smoke_run_leaves_the_callbacks_config_as_given(tmp_path):
    """fast_dev_run runs the smoke study (the main grid point only) on a copy: the callback's own
    config, which a later fit with the same callback would use, is unchanged."""
    from omegaconf import OmegaConf

    from kaelab.base_model import fit_classifier

    cfg = compose_cfg(["+experiment=yinyang_dmd", *TINY_YY, "trainer.fast_dev_run=true"], tmp_path)
    cb = DMDReplacement(cfg.dmd, out_dir=tmp_path / "dmd")
    before = OmegaConf.to_container(cb.cfg)
    fit_classifier(cfg, tmp_path / "fit", extra_callbacks=[cb])
    assert cb.metrics["dmd/grid_points"] == 1 and before["grid"]["h"]  # the smoke study (main point) ran ...
    assert OmegaConf.to_container(cb.cfg) == before  # ... on a copy
