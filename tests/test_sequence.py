"""Token positions as samples (kaelab/models/positions.py): a byte-level language model
(scripts/examples/pylm.py) read one position at a time by every stage, on the toy corpus of
tests/sequence_world.py (its digits can be learnt, and forgotten).

Unit tests first (an untrained LM: the draw, the per-position states and labels, the
position-wise head, position-wise DMD), then the pylm_* experiments end to end on one toy LM,
trained once per module."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from torch import nn

from conftest import FAST, compose_cfg
from sequence_world import DIGITS, SEARCH, tiny, write_corpus

PYLM = ["pylm_kae", "pylm_edit", "pylm_topology", "pylm_dmd"]
SMALL_KAE = ["kae.epochs=20", "kae.hidden=[64]", "kae.latent_dim=48", "kae.batch_size=256"]


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch):
    from conftest import REPO

    monkeypatch.syspath_prepend(str(REPO))  # scripts.examples.* as `python -m kaelab` from the repo root


def tiny_lm(depth: int = 2, seed: int = 0):
    from scripts.examples.pylm import PyLM

    torch.manual_seed(seed)
    return PyLM(vocab_size=256, context=16, dim=8, depth=depth, heads=2, mlp_ratio=2).eval()


def lm_trajectory(net, x):
    import kaelab as kl

    return kl.trajectory(net, x[:2], stages=["embed", "blocks.*"], head="head")


def toy_windows(tmp_path, n: int = 40):
    """(x, y) test windows of the toy corpus (scripts/examples/pylm_data.py over it), and the datamodule."""
    from scripts.examples.pylm_data import PyStdlibDataModule

    dm = PyStdlibDataModule(root=str(write_corpus(tmp_path / "corpus")), context=16, test_percent=20, limit=n)
    dm.setup()
    return *dm.tensors("test"), dm


# ------------------------------------------------------------------------------------ the draw
def test_positions_are_drawn_reproducibly_among_targets_only():
    """Catches an unseeded draw, positions drawn where the target is ignored (-100), more than
    per_window per window, and a draw that depends on how many windows follow (a smoke run on the
    first windows must see the whole split's positions for them)."""
    from kaelab.models.positions import IGNORE_INDEX, draw_positions

    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 256, (50, 16), generator=g)
    y[torch.rand(50, 16, generator=g) < 0.3] = IGNORE_INDEX
    y[7, :14] = IGNORE_INDEX  # two targets left: both drawn, no more
    where = draw_positions(y, 5, seed=3)
    assert torch.equal(where, draw_positions(y, 5, seed=3))
    assert not torch.equal(where, draw_positions(y, 5, seed=4))
    assert (y[where[:, 0], where[:, 1]] != IGNORE_INDEX).all()
    counts = torch.bincount(where[:, 0], minlength=50)
    assert counts[7] == 2 and counts.max() == 5
    assert len(set(map(tuple, where.tolist()))) == len(where)  # distinct positions
    first = where[where[:, 0] < 20]
    assert torch.equal(draw_positions(y[:20], 5, seed=3), first)
    # uniform over positions: every position of a window is drawn about equally often
    many = draw_positions(torch.zeros(4000, 16, dtype=torch.long), 4, seed=0)
    freq = torch.bincount(many[:, 1], minlength=16).double() / len(many)
    assert (freq - 1 / 16).abs().max() < 0.01


def test_dmd_fits_on_the_positions_every_stage_draws():
    """Catches positions drawn differently per stage: the DMD's fitting rows are the
    representations' draw of the training split, restricted to its n_fit windows."""
    from kaelab.dmd.config import as_dmd_config
    from kaelab.dmd.study import fit_positions
    from kaelab.models.positions import draw_positions

    y = torch.randint(0, 256, (60, 16))
    spec = {"per_window": 3, "seed": 2}
    cfg = as_dmd_config(n_fit=10, fit_seed=5)
    rows = fit_positions(y, cfg, spec)
    every = {tuple(r) for r in draw_positions(y, 3, 2).tolist()}
    assert len(rows) == 30 and len(torch.unique(rows[:, 0])) == 10
    assert {tuple(r) for r in rows.tolist()} <= every


# -------------------------------------------------------------------- states, labels, the head
def test_a_position_sample_is_its_window_state_at_that_position_labelled_by_the_next_byte(tmp_path):
    """Catches a pair taken across positions (x_i of one position, x_j of another), a state from
    another window, and a label off by one (the byte at the position, not the one after it)."""
    from kaelab.base_model import BaseModel
    from kaelab.cache import ArtifactCache
    from kaelab.koopman.representations import split_representations

    x, y, dm = toy_windows(tmp_path)
    net = tiny_lm()
    traj = lm_trajectory(net, x)
    base = BaseModel(module=nn.Module(), datamodule=dm, key="toy", ckpt_path=tmp_path, metrics={},
                     positions={"per_window": 5, "seed": 0})  # fmt: skip
    base.__dict__["trajectory"] = traj  # the cached_property, without a trained checkpoint
    data = split_representations(ArtifactCache(tmp_path / "cache"), base, ["embed", "blocks.1"])
    where, labels = data.where["test"], data.labels["test"]
    assert len(where) == 5 * len(x) and data.reps["test"]["blocks.1"].shape == (5 * len(x), 8)
    states = [s.reshape(len(x), 16, 8) for s in traj.states(x)]
    assert torch.allclose(data.reps["test"]["embed"], states[0][where[:, 0], where[:, 1]])
    assert torch.allclose(data.reps["test"]["blocks.1"], states[2][where[:, 0], where[:, 1]], atol=1e-6)
    stream = dm.stream("test")  # test windows tile the split's bytes: window w starts at 16 w
    after = stream[16 * where[:, 0] + where[:, 1] + 1].long()
    assert torch.equal(labels, after)
    assert not torch.equal(labels, x[where[:, 0], where[:, 1]])  # the byte itself is not the label


def test_the_head_reads_one_position_and_only_from_the_last_state(tmp_path):
    """Catches a head that mixes positions (it must be refused), logits read at another position,
    and a surrogate scored from an earlier block as if the attention after it did not exist."""
    from kaelab.errors import ConfigError
    from kaelab.models.positions import PositionView

    x = torch.randint(0, 256, (6, 16))
    net = tiny_lm()
    traj = lm_trajectory(net, x)
    view = PositionView.of(traj, x[:2])
    where = torch.tensor([[0, 0], [3, 15], [5, 7]])
    last = traj.states(x)[-1].reshape(6, 16, 8)[where[:, 0], where[:, 1]]
    logits = net(x)[where[:, 0], where[:, 1]]
    assert torch.allclose(view.at(x, where), logits, atol=1e-6)
    assert torch.allclose(view.forward_from(-1, last), logits, atol=1e-5)
    with pytest.raises(ConfigError, match="attends across positions"):
        view.forward_from("blocks.0", last)

    class MixingHead(nn.Module):  # each position's logits see the window's mean state
        def __init__(self, head):
            super().__init__()
            self.head = head

        def forward(self, s):
            return self.head(s + s.mean(dim=1, keepdim=True))

    mixed = copy.deepcopy(net)
    mixed.head = MixingHead(mixed.head)
    with pytest.raises(ConfigError, match="the head mixes positions"):
        PositionView.of(lm_trajectory(mixed, x), x[:2])


def test_surrogate_report_at_token_positions_from_a_notebook():
    """kl.surrogate_report with ``where``: the base network's accuracy is its next-token accuracy at
    those positions, bits are reported, agreement is a rate; a target before the last state is
    refused. Catches base predictions read at other positions than the samples' states."""
    import kaelab as kl
    from kaelab.errors import ConfigError

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (30, 16), generator=g)
    y = torch.roll(x, -1, dims=1)
    net = tiny_lm(depth=3)
    traj = lm_trajectory(net, x)
    where = kl.draw_positions(y, 4, seed=0)
    labels = y[where[:, 0], where[:, 1]]
    reps = kl.extract_positions(traj, x, where, ["blocks.0", "blocks.2"])
    prep = kl.PairPreprocessor().fit(reps["blocks.0"], reps["blocks.2"])
    kae = kl.KAE(k=3, hidden=[16], latent_dim=8, epochs=2, batch_size=40).fit(
        *prep.transform(reps["blocks.0"], reps["blocks.2"])
    )
    report = kl.surrogate_report(
        traj, prep, kae, x, labels, source="blocks.0", target="blocks.2", num_classes=256, where=where
    )
    base = (net(x)[where[:, 0], where[:, 1]].argmax(1) == labels).double().mean().item()
    assert report["base/test_acc"] == pytest.approx(base, abs=1e-6)
    assert 0.0 <= report["kae/agreement"] <= 1.0 and report["kae/test_bpb"] > 0 and report["base/test_bpb"] > 0
    with pytest.raises(ConfigError, match="attends across positions"):
        kl.surrogate_report(traj, prep, kae, x, labels, source="embed", target="blocks.0", num_classes=256, where=where)


def test_positions_on_a_network_without_token_states_is_a_one_line_error(tmp_path):
    from kaelab.errors import ConfigError
    from kaelab.models.positions import PositionView

    net = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 3))
    import kaelab as kl

    traj = kl.trajectory(net, torch.randn(2, 2), stages=["0", "1"], head="2")
    with pytest.raises(ConfigError, match=r"not \[tokens, dim\]") as err:
        PositionView.of(traj, torch.randn(2, 2))
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------- position-wise DMD
def test_positionwise_dmd_replaces_a_block_at_every_position_and_later_blocks_still_attend():
    """An operator over span [1, 2] (blocks.1) is that block replaced by the linear map at every
    position: the identity gives the LM without blocks.1 exactly, a random map the LM with
    blocks.1 := that Linear per position; over [0, 1] the real blocks.1 after it still attends.
    Catches a reshape that mixes positions or features, an operator applied to the flattened
    window, and later blocks run position by position."""
    import kaelab as kl
    from kaelab.dmd.operator import DelayOperator

    x = torch.randint(0, 256, (5, 16))
    net = tiny_lm(depth=3)
    traj = lm_trajectory(net, x)
    eye = DelayOperator(torch.eye(8), torch.eye(8), 0, 8, np.ones(8))
    hybrid = kl.HybridNet(traj, eye, (1, 2), positions=(16, 8)).eval()
    skipped = copy.deepcopy(net)
    skipped.blocks[1] = nn.Identity()
    assert hybrid(x).shape == (5, 16, 256)
    assert torch.allclose(hybrid(x), skipped(x), atol=1e-5)

    g = torch.Generator().manual_seed(0)
    M = torch.randn(8, 8, generator=g, dtype=torch.float64) / 3  # s_1 = s_0 @ M (rows are states)
    op = DelayOperator(torch.eye(8, dtype=torch.float64), M.T.contiguous(), 0, 8, np.ones(8))
    linear = nn.Linear(8, 8, bias=False)
    linear.weight.data = M.T.float()
    for span, block in (((1, 2), 1), ((0, 1), 0)):
        hybrid = kl.HybridNet(traj, op, span, positions=(16, 8)).eval()
        ref = copy.deepcopy(net)
        ref.blocks[block] = linear  # nn.Linear acts on each position's row
        assert torch.allclose(hybrid(x), ref(x), atol=1e-4), span


# ------------------------------------------------------------------------ the experiments
def test_every_pylm_experiment_composes_checks_and_reads_positions(tmp_path):
    from kaelab.config import check_values
    from kaelab.models import Trajectory, build_net
    from kaelab.models.positions import PositionView

    for name in PYLM:
        cfg = compose_cfg([SEARCH, f"+experiment={name}"], tmp_path)
        check_values(cfg)
        assert cfg.model.positions.per_window == 8, name
        assert cfg.trainer.precision == "auto", name  # the pylm experiment's: one cached base model
        net = build_net(OmegaConf.to_container(cfg.model.net, resolve=True)).eval()
        tokens = torch.randint(0, 256, (2, cfg.model.net.context))
        traj = Trajectory.of(net, tokens, OmegaConf.to_container(cfg.model.trajectory, resolve=True))
        assert traj.n_states == 5 and traj.shapes[-1] == (128, 192), name
        PositionView.of(traj, tokens)
    edit = compose_cfg([SEARCH, "+experiment=pylm_edit"], tmp_path).edit
    assert sorted(edit.target_class) == DIGITS and edit.compare_retrain


def test_a_kae_target_before_the_last_block_is_refused_before_training(tmp_path):
    from kaelab.errors import ConfigError
    from kaelab.koopman.pipeline import kae_layers

    cfg = compose_cfg([SEARCH, "+experiment=pylm_kae", "kae.target_layer=2"], tmp_path)
    with pytest.raises(ConfigError, match="attend across positions") as err:
        kae_layers(cfg)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy corpus and one base LM trained on it (cached), shared by the end-to-end tests."""
    from kaelab.pipeline import run

    tmp = tmp_path_factory.mktemp("pylm")
    root = write_corpus(tmp / "corpus")
    over = [*tiny(root, epochs=15), "data.limit=1000", "model.optimizer.lr=1e-2", f"paths.cache_dir={tmp / 'cache'}"]
    trained = run(compose_cfg(["+experiment=pylm", *over, "~callbacks.lm_report"], tmp / "train"))
    return over, trained


def run_toy(toy, experiment: str, extra, tmp_path) -> dict:
    from kaelab.pipeline import run

    over, _ = toy
    return run(compose_cfg([f"+experiment={experiment}", *over, *extra], tmp_path))


def test_pylm_kae_scores_the_surrogate_per_position(toy, tmp_path):
    """The KAE surrogate through the LM's head at single positions. Catches bits in nats or over
    the wrong labels (base/test_bpb must match the LM's own test loss, measured by training on every
    test position), a count of positions other than configured, and an agreement that is not a
    rate."""
    _, trained = toy
    m = run_toy(toy, "pylm_kae", [*SMALL_KAE, "model.positions.per_window=5"], tmp_path)
    assert m["base/cache_hit"] and m["positions/per_window"] == 5
    assert m["positions/n_test"] == 5 * m["positions/windows_test"]  # every toy window has 16 targets
    assert m["kae/target_layer"] == "blocks.1"
    assert 0.0 <= m["kae/agreement"] <= 1.0 and m["kae/agreement"] > 0.8
    assert m["base/test_acc"] > 0.75  # the toy LM learnt (5 of 6 bytes are certain)
    assert abs(m["base/test_bpb"] - trained["test/nll"] / math.log(2)) < 0.1  # 5 of 16 positions vs all
    assert m["kae/test_bpb"] >= m["base/test_bpb"] - 0.05 and m["kae/state_fvu"] < 0.2


def test_pylm_path_fidelity_on_per_position_states(toy, tmp_path):
    """kae.path on per-position states: from the embedding (x_i) to blocks.1 (x_j), blocks.0 lies
    between; with lam > 0 the KAE's middle step is trained to follow its per-position states.
    Catches path blocks read at other positions than x_i and x_j (the loss could not pull the step
    onto them) and a path loss that does not train."""
    fvu, cka = {}, {}
    for lam in (0.0, 10.0):
        m = run_toy(toy, "pylm_kae", [*SMALL_KAE, "kae.source_layer=0", f"kae.path.lam={lam}"], tmp_path / str(lam))
        assert m["path/blocks"] == ["blocks.0"] and m["path/lam"] == lam and m["path/steps"] == [5]
        fvu[lam], cka[lam] = m["path/fvu_per_block"][0], m["path/cka_per_block"][0]
        assert math.isfinite(fvu[lam]) and 0.0 <= cka[lam] <= 1.0 + 1e-9
    # measured: FVU 0.26 -> 0.19, CKA 0.87 -> 0.93 (the straight line from x_i to x_j: FVU 0.17)
    assert fvu[10.0] < fvu[0.0] - 0.04 and cka[10.0] > cka[0.0], (fvu, cka)


def test_pylm_edit_forgets_the_digits_on_the_toy(toy, tmp_path):
    """Forget the ten digit bytes as next tokens. Catches an edit that forgets nothing, one that
    ruins every other position, forgetting measured on the wrong positions, and a retrain baseline
    that still trains on digit targets (data.exclude_targets not set)."""
    m = run_toy(toy, "pylm_edit", SMALL_KAE, tmp_path)
    assert sorted(m["edit/target_class"]) == DIGITS
    assert m["edit/forget_acc_before"] > 0.6 and m["edit/forget_set_rate_before"] > 0.9
    assert m["edit/forget_acc_after"] < 0.1 and m["edit/forget_set_rate_after"] < 0.1
    assert m["edit/retain_acc_after"] > m["edit/retain_acc_before"] - 0.05
    assert m["retrain/forget_set_rate"] < 0.05 and m["retrain/retain_acc"] > 0.7
    assert m["positions/n_test"] == 8 * m["positions/windows_test"]


def test_pylm_topology_per_position_states(toy, tmp_path):
    m = run_toy(toy, "pylm_topology", [*SMALL_KAE, "topology.n_points=300", "topology.curve_points=100",
                                       "topology.figure_points=300"], tmp_path)  # fmt: skip
    assert m["topology/n_points"] == 300 and len(m["topology/beta0_layers"]) == 3  # embed, blocks.0, blocks.1
    assert len(m["topology/beta0_steps"]) == 11 and all(1 <= b <= 300 for b in m["topology/beta0_steps"])
    assert "topology_layers_pca.png" in m["topology/figures"]


def test_pylm_dmd_replaces_blocks_position_by_position(toy, tmp_path):
    """dmd/base_test_acc is the LM's next-byte accuracy over every test target (what training's test
    reports); each block replaced alone is priced. Catches logits and targets misaligned when flattened."""
    _, trained = toy
    extra = ["dmd.n_fit=200", "dmd.grid.span=[[0,-1],[0,1],[1,2]]", "dmd.figures=false"]
    m = run_toy(toy, "pylm_dmd", extra, tmp_path)
    assert m["dmd/base_test_acc"] == pytest.approx(trained["test/acc"], abs=1e-3)
    assert m["positions/n_fit"] == 8 * 200 and m["dmd/n_fit_pairs"] == 8 * 200 * 2  # two transitions each
    assert m["dmd/blocks_replaced_alone"] == ["blocks.0", "blocks.1"]
    for b in ("blocks.0", "blocks.1"):
        assert m[f"dmd/block/{b}/bpb_cost"] == pytest.approx(m[f"dmd/block/{b}/test_bpb"] - m["dmd/base_test_bpb"])
    assert m["dmd/test_bpb"] > m["dmd/base_test_bpb"]  # both blocks by one linear map: worse than the LM


def test_positions_change_the_representations_cache_entry(toy, tmp_path):
    """Catches a cache key without the draw: other positions must not be served from the entry of
    the first."""
    from kaelab.base_model import base_model
    from kaelab.cache import ArtifactCache
    from kaelab.koopman.representations import split_representations

    over, _ = toy
    reps, entries = {}, []
    for per_window, seed in ((4, 0), (4, 1), (6, 0), (4, 0)):
        draw = f"model.positions={{per_window: {per_window}, seed: {seed}}}"
        cfg = compose_cfg(["+experiment=pylm_kae", *over, draw], tmp_path)
        base = base_model(cfg, tmp_path / "base")
        data = split_representations(ArtifactCache(cfg.paths.cache_dir), base, ["embed"])
        reps[per_window, seed] = (data.where["test"], data.reps["test"]["embed"])
        entries.append(sum(1 for p in (Path(cfg.paths.cache_dir) / "representations").iterdir() if p.is_dir()))
    assert entries[1] == entries[0] + 1 and entries[2] == entries[1] + 1 and entries[3] == entries[2]  # the last: a hit
    assert not torch.equal(reps[4, 0][0], reps[4, 1][0]) and len(reps[6, 0][0]) == len(reps[4, 0][0]) * 6 // 4
    assert not torch.equal(reps[4, 0][1], reps[4, 1][1])


def test_compare_retrain_needs_a_datamodule_that_takes_exclude_targets(tmp_path):
    from kaelab.config import check_values
    from kaelab.errors import ConfigError

    cfg = compose_cfg([SEARCH, "+experiment=pylm_edit", *FAST], tmp_path)
    with open_dict(cfg):
        cfg.data = {"_target_": "kaelab.data.InMemoryDataModule", "splits": {}, "batch_size": 2}
    with pytest.raises(ConfigError, match="exclude_targets"):
        check_values(cfg)
