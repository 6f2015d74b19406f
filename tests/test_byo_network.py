"""Bring your own network: a module defined in this test file (kaelab has never seen it) runs
through training, the KAE and DMD replacement by configuration alone: its ``_target_`` and the
module paths of its trajectory (``model.trajectory``), no code in kaelab."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from torch import nn

from conftest import FAST, compose_cfg

HERE = __name__  # pytest imports this file as a top-level module (tests/ is on sys.path)


class TokenBlock(nn.Module):
    """A residual block on a [B, tokens, dim] stream: x + MLP(LN(x)) mixing features, then tokens."""

    def __init__(self, tokens: int, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.features = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.mix = nn.Linear(tokens, tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.features(self.norm(x))
        return x + self.mix(x.transpose(1, 2)).transpose(1, 2)


class TinyStream(nn.Module):
    """Yin-Yang point -> 3 tokens of width 4 -> residual blocks -> head. Its states are 3-d."""

    def __init__(self, in_dim: int, tokens: int, dim: int, depth: int, out_dim: int):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, tokens * dim), nn.Unflatten(1, (tokens, dim)))
        self.blocks = nn.ModuleList(TokenBlock(tokens, dim) for _ in range(depth))
        self.head = nn.Sequential(nn.Flatten(1), nn.LayerNorm(tokens * dim), nn.Linear(tokens * dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


NET = {"_target_": f"{HERE}.TinyStream", "in_dim": 2, "tokens": 3, "dim": 4, "depth": 3, "out_dim": 3}
TRAJECTORY = {"stages": ["embed", "blocks.*"], "head": "head"}
SMALL = ["data.n_train=1000", "data.n_val=200", "data.n_test=500", "data.batch_size=100", "model.epochs=40",
         "trainer.num_threads=1", *FAST]  # fmt: skip


def user_cfg(experiment: str, overrides: list[str], tmp_path):
    cfg = compose_cfg([f"+experiment={experiment}", *SMALL, *overrides], tmp_path)
    with open_dict(cfg):
        cfg.model.net = NET
        cfg.model.trajectory = TRAJECTORY
        cfg.model.optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-2, "weight_decay": 0.0}
    return cfg


def test_user_network_through_kae_and_dmd(tmp_path):
    from kaelab.pipeline import run

    kae = run(user_cfg("yinyang_kae", ["kae.epochs=60", "kae.batch_size=250", "kae.source_layer=1"], tmp_path))
    assert (kae["kae/source_layer"], kae["kae/target_layer"]) == ("blocks.0", "blocks.2")
    assert kae["base/test_acc"] > 0.8  # the user's net trained (chance is 1/3)
    assert kae["kae/state_fvu"] < 0.5  # the KAE predicts the flattened 3x4 last-block stream
    assert kae["kae/agreement"] > 0.7

    dmd_over = ["dmd.scaling.n_layers=0", "dmd.h=1", "dmd.n_fit=500", "dmd.figures=false", "dmd.span=null",
                "dmd.grid.h=[]", "dmd.grid.rank=[]", "dmd.grid.span=[]"]  # fmt: skip
    dmd = run(user_cfg("yinyang_resmlp_dmd", dmd_over, tmp_path))
    assert dmd["dmd/n_states"] == 4  # embed + 3 blocks, named in config
    assert dmd["dmd/layers_replaced"] == 2  # 3 transitions, the first one seeds the delay window
    # the same cached base model as the KAE run (the trajectory spec is not part of its key)
    assert dmd["dmd/base_test_acc"] == pytest.approx(kae["base/test_acc"], abs=1e-6)


def test_user_network_with_a_wrong_trajectory_is_a_one_line_error(tmp_path):
    from kaelab.errors import ConfigError
    from kaelab.pipeline import run

    cfg = user_cfg("yinyang_kae", [], tmp_path)
    with open_dict(cfg):
        cfg.model.trajectory.stages = ["embed", "blockz.*"]
    with pytest.raises(ConfigError, match="has no module 'blockz'"):
        run(cfg)
    assert not (tmp_path / "cache" / "base_model").exists()  # failed before training


def test_every_experiment_instantiates_its_network(tmp_path):
    """Like lightning-hydra-template's test_configs: each experiment's net (and optimizer) builds."""
    from conftest import EXPERIMENTS
    from kaelab.instantiate import instantiate
    from kaelab.models import build_net, stage_names

    for name in EXPERIMENTS:
        cfg = compose_cfg([f"+experiment={name}"], tmp_path)
        net = build_net(OmegaConf.to_container(cfg.model.net, resolve=True))
        assert len(stage_names(net)) >= 2, name
        if cfg.model.get("optimizer") is not None:
            instantiate(cfg.model.optimizer, "model.optimizer")(net.parameters())
