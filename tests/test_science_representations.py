"""Representations (kaelab.koopman.representations) against the network run by hand: the right
state, in eval mode, keyed by the weights, hashed over every split, with their own samples' labels.

Wrong implementations these catch:
* representations taken with BatchNorm in training mode (batch statistics);
* each named representation being the state one block earlier;
* the cache key without the weights' content hash (a base model rebuilt under its key keeps the
  old representations);
* the content hash a KAE's key includes covering only the training split;
* labels that are not those of the representations' samples;
* a content hash (``kaelab.cache.tensors_digest``) of names and shapes, not values.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from kaelab.cache import ArtifactCache
from kaelab.data.yinyang import YinYangDataModule
from kaelab.koopman.representations import (
    Representations,
    cached_representations,
    extract,
    split_representations,
)
from kaelab.models import Trajectory, build_net


def resmlp(seed: int) -> torch.nn.Module:
    """A ResMLP whose BatchNorm running statistics are not the identity's (a few training-mode passes)."""
    torch.manual_seed(seed)
    net = build_net(dict(_target_="kaelab.models.ResMLP", in_dim=2, width=8, n_blocks=3, out_dim=3))
    with torch.no_grad():
        for _ in range(3):
            net(3.0 + 2.0 * torch.randn(64, 2))
    return net


def by_hand(net, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each stage's output in eval mode, the network's modules called one after the other."""
    net.eval()
    with torch.no_grad():
        out = {"input_layer": net.input_layer(x)}
        h = out["input_layer"]
        for i, block in enumerate(net.blocks):
            h = block(h)
            out[f"blocks.{i}"] = h
    return out


def test_extract_gives_each_named_state_in_eval_mode_and_restores_the_mode():
    net = resmlp(0)
    x = torch.randn(40, 2)
    traj = Trajectory.of(net, x[:2])
    net.train()
    got = extract(traj, x, ["input_layer", "blocks.1", "blocks.2"], batch_size=16)
    assert net.training  # the caller's mode is restored
    want = by_hand(net, x)
    for name in ("input_layer", "blocks.1", "blocks.2"):
        torch.testing.assert_close(got[name], want[name], msg=name)


def test_cached_representations_follow_the_weights_under_the_same_base_key(tmp_path):
    x = {"train": torch.randn(32, 2), "test": torch.randn(16, 2)}
    cache = ArtifactCache(tmp_path)
    nets = [resmlp(0), resmlp(1)]
    trajs = [Trajectory.of(n.eval(), x["train"][:2]) for n in nets]
    first = cached_representations(cache, "base", trajs[0], x, ["blocks.0"])
    second = cached_representations(cache, "base", trajs[1], x, ["blocks.0"])  # rebuilt under the same key
    torch.testing.assert_close(second["test"]["blocks.0"], by_hand(nets[1], x["test"])["blocks.0"])
    assert not torch.equal(first["test"]["blocks.0"], second["test"]["blocks.0"])


def test_content_hash_covers_every_split():
    reps = {"train": {"a": torch.zeros(2)}, "test": {"a": torch.zeros(2)}}
    one = Representations({}, {}, reps, 2, {"train/a": "t1", "test/a": "s1"})
    other = Representations({}, {}, reps, 2, {"train/a": "t1", "test/a": "s2"})
    assert one.content_hash(["a"]) != other.content_hash(["a"])


def test_split_representations_carry_their_own_samples_labels(tmp_path):
    dm = YinYangDataModule(n_train=60, n_val=20, n_test=30)
    dm.setup()
    net = resmlp(0).eval()
    base = SimpleNamespace(datamodule=dm, key="base", trajectory=Trajectory.of(net, dm.tensors("train")[0][:2]))
    data = split_representations(ArtifactCache(tmp_path), base, ["blocks.2"])
    for split in ("train", "val", "test"):
        x, y = dm.tensors(split)
        assert torch.equal(data.labels[split], y) and torch.equal(data.inputs[split], x)
        torch.testing.assert_close(data.reps[split]["blocks.2"], by_hand(net, x)["blocks.2"])


def test_the_content_hash_of_tensors_is_of_their_values():
    """``tensors_digest`` (what keys a derived artifact by its parent's weights or data) changes
    with any value, the dtype or a name. Catches a digest of names and shapes alone."""
    from kaelab.cache import tensors_digest

    zeros = {"w": torch.zeros(3)}
    assert tensors_digest(zeros) == tensors_digest({"w": torch.zeros(3)})
    assert tensors_digest(zeros) != tensors_digest({"w": torch.tensor([0.0, 0.0, 1e-6])})
    assert tensors_digest(zeros) != tensors_digest({"w": torch.zeros(3, dtype=torch.float64)})
    assert tensors_digest(zeros) != tensors_digest({"v": torch.zeros(3)})
