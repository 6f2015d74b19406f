"""The examples a user would copy (scripts/examples/): two networks kaelab has never seen (a ViT and a
residual CNN) and MNIST brought as torchvision datasets, each used by configuration alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import FAST, REPO, compose_cfg

SEARCH = f"hydra.searchpath=[file://{REPO / 'scripts' / 'examples' / 'conf'}]"
# the image examples (MNIST inputs); the language model's (pylm*) are tests/test_pylm.py's and tests/test_sequence.py's
EXAMPLES = sorted(p.stem for p in (REPO / "scripts" / "examples" / "conf" / "experiment").glob("mnist_*.yaml"))


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # scripts.examples.* as `python -m kaelab` from the repo root


def test_every_example_composes_checks_and_builds_its_network(tmp_path, data_dir):
    from kaelab.config import check_values
    from kaelab.models import Trajectory, build_net

    assert len(EXAMPLES) == 6
    for name in EXAMPLES:
        cfg = compose_cfg([SEARCH, f"+experiment={name}"], tmp_path, data_dir)
        check_values(cfg)
        net = build_net(OmegaConf.to_container(cfg.model.net, resolve=True))
        spec = OmegaConf.to_container(cfg.model.trajectory, resolve=True)
        traj = Trajectory.of(net.eval(), torch.randn(2, 784), spec)
        assert traj.n_states >= 4, name  # the stem / embedding and at least 3 blocks


@pytest.mark.parametrize("experiment", ["mnist_cnn_dmd", "mnist_vit_edit"])
def test_example_stages_run_end_to_end(experiment, tmp_path, data_dir):
    """Train (one batch), then the example's stage on the real MNIST splits: DMD over the CNN's
    blocks; the ViT's KAE (blocks.0 -> blocks.3) and an edit of its operator."""
    from kaelab.pipeline import run

    cfg = compose_cfg([SEARCH, f"+experiment={experiment}", "trainer.fast_dev_run=true", *FAST], tmp_path, data_dir)
    metrics = run(cfg)
    stages = {"mnist_cnn_dmd": ["dmd"], "mnist_vit_edit": ["kae", "edit"]}[experiment]
    for stage in stages:
        assert any(k.startswith(f"{stage}/") for k in metrics), (stage, sorted(metrics))
    assert (tmp_path / "run" / "metrics.json").is_file()


def torchvision_mnist(data_dir: Path, limit: int | None, val_size: int) -> dict:
    cfg = OmegaConf.load(REPO / "scripts" / "examples" / "conf" / "data" / "mnist_torchvision.yaml")
    for split in ("train", "test"):
        cfg[split].root = str(data_dir)
    cfg.shuffle_seed, cfg.limit, cfg.val_size = 0, limit, val_size
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def test_torchvision_datasets_give_the_builtin_mnist_tensors(data_dir):
    """MNIST brought as torchvision datasets with their own transforms (DatasetDataModule) gives
    exactly the tensors of kaelab's vectorised MNISTDataModule: the same order, normalisation,
    flattening and a validation split carved with the same seeded permutation."""
    from kaelab.data import MNISTDataModule, build_datamodule
    from kaelab.data.mnist import load_mnist, normalise

    dm = build_datamodule(torchvision_mnist(data_dir, limit=1500, val_size=300))
    dm.setup()
    ref = MNISTDataModule(root=str(data_dir))
    ref.setup()
    x, y = dm.tensors("test")
    assert x.shape == (1500, 784) and torch.equal(x, ref.tensors("test")[0][:1500])
    assert torch.equal(y, ref.tensors("test")[1][:1500])
    raw_x, raw_y = load_mnist(data_dir, train=True, download=False)
    perm = torch.randperm(1500, generator=torch.Generator().manual_seed(0))  # split_seed 0
    first = normalise(raw_x[:1500])
    assert torch.equal(dm.tensors("val")[0], first[perm[:300]]) and torch.equal(dm.tensors("val")[1], raw_y[perm[:300]])
    assert torch.equal(dm.tensors("train")[0], first[perm[300:]])
    assert dm.num_classes == 10 and dm.in_dim == 784


def test_a_user_datamodule_trains_and_is_keyed_by_its_config(tmp_path, data_dir):
    """data=<a _target_ config> trains a base model; the cache key follows the datasets' config."""
    from kaelab.base_model import base_model_key
    from kaelab.pipeline import run

    over = [SEARCH, "+experiment=mnist_plain_mlp", "data=mnist_torchvision", "data.limit=1200", "data.val_size=200",
            "model.epochs=5", "data.batch_size=50", *FAST]  # fmt: skip
    cfg = compose_cfg(over, tmp_path, data_dir)
    metrics = run(cfg)
    assert metrics["test/acc"] > 0.5  # 1000 images, 100 steps (chance 0.1)
    other = compose_cfg([*over, "data.limit=1300"], tmp_path, data_dir)
    assert base_model_key(other) != base_model_key(cfg)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"_target_": "torch.nn.Identity"}, "built a Identity, not a kaelab.data.TensorDataModule"),
        (
            {"_target_": "kaelab.data.DatasetDataModule",
             "train": {"_target_": "torchvision.datasets.FakeData", "size": 8},
             "test": {"_target_": "torchvision.datasets.FakeData", "size": 8}},
            "data.train yields inputs of type Image: give it a transform to tensors",
        ),
        ({"_target_": "kaelab.data.DatasetDataModule", "train": None}, "data.test is missing"),
        ({"name": "cifar"}, "data needs a _target_"),
    ],
    ids=["not-a-tensor-datamodule", "dataset-without-transform", "missing-test-split", "no-target"],
)  # fmt: skip
def test_bad_data_configs_are_one_line_errors(data, message):
    from kaelab.data import build_datamodule
    from kaelab.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as err:
        build_datamodule(data).setup()
    assert "\n" not in str(err.value)
