"""Full-length runs that must reach the paper-level numbers on held-out data (``make test-slow``).

Each trains with the experiment's own defaults; expect minutes (Yin-Yang) to tens of minutes
(MNIST) on a 2-core CPU.
"""

import pytest

from conftest import run_cfg

pytestmark = pytest.mark.slow
QUIET = ["callbacks.progress_bar=none", "logger.csv=false"]


def test_yinyang_mlp_held_out(tmp_path):
    m = run_cfg(["+experiment=yinyang_mlp", *QUIET], tmp_path)
    assert m["test/acc"] >= 0.985


def test_yinyang_kae_surrogate(tmp_path):
    m = run_cfg(["+experiment=yinyang_kae", *QUIET], tmp_path)
    assert m["kae/test_acc"] >= 0.98
    assert m["base/test_acc"] - m["kae/test_acc"] <= 0.005


def test_yinyang_binary_mlp(tmp_path):
    m = run_cfg(["+experiment=yinyang_binary_mlp", *QUIET], tmp_path)
    assert m["test/acc"] >= 0.975


def test_mnist_plain_mlp(tmp_path, data_dir):
    m = run_cfg(["+experiment=mnist_plain_mlp", *QUIET], tmp_path, data_dir)
    assert m["test/acc"] >= 0.97


def test_mnist_mlp(tmp_path, data_dir):
    m = run_cfg(["+experiment=mnist_mlp", *QUIET], tmp_path, data_dir)
    assert m["test/acc"] >= 0.990


def test_mnist_kae_surrogate(tmp_path, data_dir):
    m = run_cfg(["+experiment=mnist_kae", *QUIET], tmp_path, data_dir)
    assert m["kae/test_acc"] >= 0.9853
