"""Hydra composition of every experiment, typed schemas and the CLI's one-line errors."""

import pytest
from omegaconf import OmegaConf

from conftest import EXPERIMENTS, compose_cfg, run_cli
from kaelab.config import TASKS


def test_experiments_exist():
    for name in ("yinyang_mlp", "mnist_mlp", "mnist_plain_mlp", "yinyang_binary_mlp", "yinyang_kae", "mnist_kae"):
        assert name in EXPERIMENTS


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(experiment, tmp_path):
    cfg = compose_cfg([f"+experiment={experiment}"], tmp_path)
    assert cfg.name == experiment
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert resolved["task"] in TASKS
    assert resolved["model"]["epochs"] >= 1


def test_default_is_the_yinyang_kae_pipeline(tmp_path):
    cfg = compose_cfg([], tmp_path)
    assert (cfg.task, cfg.name, cfg.data.name, cfg.model.net._target_) == (
        "kae",
        "yinyang_kae",
        "yinyang",
        "kaelab.models.ResMLP",
    )
    assert cfg.kae.k == 100 and cfg.kae.latent_dim == 20


def test_paper_hyperparameters(tmp_path):
    yy = compose_cfg(["+experiment=yinyang_mlp"], tmp_path)
    assert (yy.model.epochs, yy.data.batch_size, yy.model.optim.lr, yy.model.net.n_blocks) == (500, 512, 0.1, 5)
    mn = compose_cfg(["+experiment=mnist_kae"], tmp_path)
    assert (mn.model.epochs, mn.data.batch_size, mn.model.net.width, mn.model.net.n_blocks) == (30, 128, 784, 4)
    assert (mn.kae.latent_dim, mn.kae.hidden, mn.kae.k, mn.kae.batch_size) == (800, [1000], 10, 512)
    assert (mn.kae.lr, mn.kae.lambdas.iso) == (5e-3, 1e-3)
    assert compose_cfg(["+experiment=mnist_kae", "kae=mnist_paper"], tmp_path).kae.epochs == 100


def test_kae_seed_sweep_shares_one_base_model(tmp_path):
    from kaelab.base_model import base_model_key

    keys = {base_model_key(compose_cfg(["+experiment=yinyang_kae", f"seed={s}"], tmp_path)) for s in range(3)}
    assert len(keys) == 1
    base = [base_model_key(compose_cfg(["+experiment=yinyang_mlp", f"seed={s}"], tmp_path)) for s in range(2)]
    assert base[0] != base[1]


def test_base_model_key_ignores_where_the_data_lives(tmp_path):
    from kaelab.base_model import base_model_key

    def key(*over):
        return base_model_key(compose_cfg(["+experiment=mnist_mlp", *over], tmp_path))

    assert key("data.root=/a") == key("data.root=/b", "data.download=false")
    assert key("data.root=/a") != key("data.root=/a", "data.augment_shift=0")


def test_data_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KAELAB_DATA_DIR", "/some/where")
    with_env = compose_cfg(["+experiment=mnist_mlp"], tmp_path)
    assert with_env.data.root == "/some/where"
    assert compose_cfg(["+experiment=mnist_mlp", "data.root=/else"], tmp_path).data.root == "/else"


def _one_error(proc):
    """The CLI failed with a non-zero exit and a short message, not a traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def test_unknown_key_names_the_key(tmp_path):
    err = _one_error(run_cli(["+experiment=yinyang_mlp", "trainer.max_epoch=3"], tmp_path))
    assert "trainer.max_epoch" in err.splitlines()[0]


def test_unknown_appended_key_is_rejected(tmp_path):
    err = _one_error(run_cli(["+experiment=yinyang_mlp", "+model.net.depth=3"], tmp_path))
    assert "depth" in err


def test_wrong_type_names_the_key(tmp_path):
    err = _one_error(run_cli(["+experiment=yinyang_mlp", "model.epochs=many"], tmp_path))
    assert "model.epochs" in err.splitlines()[0]


def test_unknown_experiment_lists_available(tmp_path):
    err = _one_error(run_cli(["+experiment=nope"], tmp_path))
    assert "experiment/nope" in err
    for name in ("yinyang_mlp", "mnist_kae"):
        assert name in err


@pytest.mark.parametrize(
    "override, message",
    [
        ("kae.lambdas.iso=-1", "kae.lambdas.iso=-1.0 must be >= 0"),
        ("kae.target_layer=9", "kae.target_layer=9 is out of range"),
        ("kae.source_layer=blocks.7", "kae.source_layer='blocks.7' is not a representation"),
        ("kae.source_layer=-1", "must come before kae.target_layer"),
        ("task=fly", "task must be one of"),
    ],
)
def test_bad_values_fail_fast_with_one_line(tmp_path, override, message):
    proc = run_cli([override], tmp_path)
    err = _one_error(proc)
    assert proc.returncode == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("kaelab: error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "cache").exists()  # failed before any training


def test_missing_mnist_offline_is_one_line_error(tmp_path):
    proc = run_cli(["+experiment=mnist_mlp", f"paths.data_dir={tmp_path / 'empty'}", "data.download=false"], tmp_path)
    err = _one_error(proc)
    assert proc.returncode == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("kaelab: error:")]
    assert len(lines) == 1 and "MNIST not found" in lines[0] and "KAELAB_DATA_DIR" in lines[0]
