"""Yin-Yang generation, MNIST on the shared raw files, epoch-seeded batching."""

import numpy as np
import pytest
import torch

from kaelab.data import MNISTDataModule, YinYangDataModule, yinyang_class, yinyang_sample
from kaelab.data.tensor_data import ShuffledBatches
from kaelab.errors import DataNotFoundError


def test_yinyang_points_are_valid_and_balanced():
    pts, labels = yinyang_sample(3000, seed=42)
    assert pts.shape == (3000, 2) and labels.shape == (3000,)
    assert np.all(np.hypot(pts[:, 0] - 0.5, pts[:, 1] - 0.5) <= 0.5)
    np.testing.assert_array_equal(yinyang_class(pts[:, 0], pts[:, 1]), labels)
    counts = np.bincount(labels, minlength=3) / 3000
    assert np.all(np.abs(counts - 1 / 3) < 0.04)


def test_yinyang_reproducible_and_seeds_distinct():
    a, _ = yinyang_sample(50, seed=42)
    b, _ = yinyang_sample(50, seed=42)
    c, _ = yinyang_sample(50, seed=40)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_yinyang_regions():
    # centres of the dots are class 2; the upper middle is yin (1), the lower middle yang (0)
    assert yinyang_class(0.25, 0.5) == 2 and yinyang_class(0.75, 0.5) == 2
    assert yinyang_class(0.5, 0.9) == 1 and yinyang_class(0.5, 0.1) == 0


def test_yinyang_datamodule_splits_and_features():
    dm = YinYangDataModule(n_train=300, n_val=100, n_test=200, features="xy_mirror")
    dm.setup()
    x, y = dm.tensors("train")
    assert x.shape == (300, 4) and dm.in_dim == 4 and dm.num_classes == 3
    torch.testing.assert_close(x[:, 2:], 1 - x[:, :2])
    assert len(dm.tensors("val")[0]) == 100 and len(dm.tensors("test")[0]) == 200
    assert not torch.equal(dm.tensors("test")[0][:50, :2], x[:50, :2])


def test_yinyang_binary_has_no_dots():
    dm = YinYangDataModule(n_train=500, n_val=0, n_test=100, binary=True)
    dm.setup()
    assert dm.num_classes == 2 and set(dm.tensors("train")[1].tolist()) == {0, 1}
    assert "val" not in dm.splits


def test_mnist_datamodule_on_shared_files(data_dir):
    dm = MNISTDataModule(root=str(data_dir), download=False, val_size=5000, batch_size=64)
    dm.prepare_data()
    dm.setup()
    x, y = dm.tensors("train")
    assert x.shape == (55000, 784) and x.dtype == torch.float32
    assert len(dm.tensors("val")[0]) == 5000 and dm.tensors("test")[0].shape == (10000, 784)
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1.0) < 0.03  # Normalize(0.1307, 0.3081)
    assert set(y.unique().tolist()) == set(range(10))
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (64, 784) and yb.shape == (64,)


def test_mnist_missing_offline_is_one_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        MNISTDataModule(root=str(tmp_path), download=False).prepare_data()
    msg = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in msg and "KAELAB_DATA_DIR" in msg and "\n" not in msg


def test_shuffled_batches_depend_only_on_seed_and_epoch():
    s = ShuffledBatches(10, 4, seed=3)
    s.set_epoch(2)
    first = [b.tolist() for b in s]
    s.set_epoch(5)
    s.set_epoch(2)
    assert [b.tolist() for b in s] == first
    assert sorted(sum(first, [])) == list(range(10)) and [len(b) for b in first] == [4, 4, 2]
    s.set_epoch(3)
    assert [b.tolist() for b in s] != first
    assert len(ShuffledBatches(10, 4, drop_last=True)) == 2


def test_random_translate_shifts_within_bounds():
    from kaelab.data.augment import random_translate

    x = torch.full((50, 784), -1.0)
    x[:, 14 * 28 + 14] = 5.0  # one bright pixel in the centre
    out = random_translate(x, 28, 2, torch.Generator().manual_seed(0), fill=-1.0)
    rows, cols = torch.div(out.argmax(1), 28, rounding_mode="floor"), out.argmax(1) % 28
    assert (rows - 14).abs().max() <= 2 and (cols - 14).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10  # independent offsets per image
    assert torch.all((out == 5.0).sum(1) == 1) and torch.all((out == -1.0).sum(1) == 783)


def test_augmentation_is_seeded_by_step_and_train_only(data_dir):
    from types import SimpleNamespace

    dm = MNISTDataModule(root=str(data_dir), download=False, augment_shift=2)
    x, y = torch.randn(8, 784), torch.arange(8)
    dm.trainer = SimpleNamespace(training=True, global_step=7)
    a, b = dm.on_after_batch_transfer((x, y), 0)[0], dm.on_after_batch_transfer((x, y), 0)[0]
    assert torch.equal(a, b) and not torch.equal(a, x)
    dm.trainer = SimpleNamespace(training=True, global_step=8)
    assert not torch.equal(dm.on_after_batch_transfer((x, y), 0)[0], a)
    dm.trainer = SimpleNamespace(training=False, global_step=8)
    assert torch.equal(dm.on_after_batch_transfer((x, y), 0)[0], x)


def test_exclude_classes_removes_them_from_train_and_val_only():
    dm = YinYangDataModule(n_train=600, n_val=300, n_test=300, exclude_classes=[2])
    dm.setup()
    for split in ("train", "val"):
        assert 2 not in dm.tensors(split)[1].tolist()
        assert {0, 1} <= set(dm.tensors(split)[1].tolist())
    assert 2 in dm.tensors("test")[1].tolist()  # the test split keeps the forgotten class, to measure it
    full = YinYangDataModule(n_train=600, n_val=300, n_test=300)
    full.setup()
    keep = full.tensors("train")[1] != 2
    assert torch.equal(dm.tensors("train")[0], full.tensors("train")[0][keep])


def test_train_loader_drops_a_single_sample_last_batch_only():
    # 257 = 2 x 128 + 1: a last batch of one sample would break BatchNorm in training
    assert [len(b) for b in ShuffledBatches(257, 128, drop_singleton=True)] == [128, 128]
    assert [len(b) for b in ShuffledBatches(258, 128, drop_singleton=True)] == [128, 128, 2]
    assert [len(b) for b in ShuffledBatches(257, 128)] == [128, 128, 1]  # evaluation keeps every sample
