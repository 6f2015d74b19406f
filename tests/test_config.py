"""Hydra composition of every experiment, typed schemas and the CLI's one-line errors."""

import copy
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from conftest import EXPERIMENTS, compose_cfg, run_cli
from kaelab.config import TASKS
from kaelab.errors import ConfigError


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
    # the fast preset: the paper's encoder, k, batch, lr and lambdas, a 400-dimensional latent space
    assert (mn.kae.latent_dim, mn.kae.hidden, mn.kae.k, mn.kae.batch_size) == (400, [1000], 10, 512)
    assert (mn.kae.lr, mn.kae.lambdas.iso) == (5e-3, 1e-3)
    paper = compose_cfg(["+experiment=mnist_kae", "kae=mnist_paper"], tmp_path).kae
    assert (paper.epochs, paper.latent_dim, paper.hidden) == (100, 800, [1000])


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
        ("kae.path.lam=nan", "kae.path.lam=nan must be a finite number"),
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


# ------------------------------------------------------------------ non-finite numbers, anywhere
def _float_keys(node, where=""):
    """Every float leaf of a composed config, as ``a.b.c`` / ``a.b[2]`` keys (hydra left out).
    Walked here on its own, not with kaelab.config's walk: a walk that skips a kind of node must not
    also hide the keys it skips from this battery."""
    if isinstance(node, DictConfig):
        children = [(f"{where}.{k}" if where else str(k), k) for k in node.keys() if where or k != "hydra"]
    elif isinstance(node, ListConfig):
        children = [(f"{where}[{i}]", i) for i in range(len(node))]
    else:
        return
    for key, index in children:
        try:
            value = node[index]
        except Exception:  # ??? or a Hydra-runtime interpolation
            continue
        if isinstance(value, float):
            yield key, node, index
        else:
            yield from _float_keys(value, key)


COMPOSED = {e: compose_cfg([f"+experiment={e}"], Path("/nonexistent/compose-only")) for e in EXPERIMENTS}
FLOAT_KEYS = [(e, key) for e, cfg in COMPOSED.items() for key, _, _ in _float_keys(cfg)]


def test_the_battery_covers_every_group():
    groups = {key.split(".")[0] for _, key in FLOAT_KEYS}
    assert {"data", "model", "kae", "dmd", "edit", "topology"} <= groups, groups
    assert len(FLOAT_KEYS) > 200


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("experiment, key", FLOAT_KEYS, ids=[f"{e}:{k}" for e, k in FLOAT_KEYS])
def test_a_non_finite_float_anywhere_is_refused_before_any_work(experiment, key, value, tmp_path, monkeypatch):
    """nan / inf in any float of any experiment's composed config is a one-line ConfigError naming
    the key, raised by kaelab.pipeline.run before the run directory exists. Catches a check made key
    by key (a forgotten key passes: nan fails no ``<`` or ``>`` comparison), one that skips nested
    groups or list items, and one that runs after work has started."""
    from kaelab import pipeline

    cfg = copy.deepcopy(COMPOSED[experiment])  # composed once per experiment: the battery stays fast
    cfg.paths.run_dir, cfg.paths.cache_dir = str(tmp_path / "run"), str(tmp_path / "cache")
    parent, index = next((p, i) for k, p, i in _float_keys(cfg) if k == key)
    parent[index] = value
    monkeypatch.setitem(pipeline.TASK_FUNCTIONS, cfg.task, f"{__name__}:_no_work")
    with pytest.raises(ConfigError) as err:
        pipeline.run(cfg)
    assert str(err.value) == f"{key}={value} must be a finite number"
    assert not (tmp_path / "run").exists()


def _no_work(cfg, run_dir):
    raise AssertionError("the task ran")


# ------------------------------------------------------------------ the checks run once per run
def test_config_is_checked_once_per_cli_run(tmp_path, monkeypatch):
    """``python -m kaelab`` checks the config once (kaelab.pipeline.run, before the heavy imports),
    not again in the entry point. Catches the entry point and the pipeline both calling
    check_values, and a run that skips the check."""
    import kaelab.__main__ as entry
    from kaelab import config, pipeline

    calls = []
    real = config.check_values

    def counted(cfg):
        calls.append(cfg.name)
        real(cfg)

    for module in (config, pipeline, entry):
        monkeypatch.setattr(module, "check_values", counted, raising=False)
    monkeypatch.setitem(pipeline.TASK_FUNCTIONS, "train", f"{__name__}:_metrics_only")
    args = ["+experiment=yinyang_mlp", f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    monkeypatch.setattr(sys, "argv", ["kaelab", *args])
    GlobalHydra.instance().clear()
    try:
        entry.main()
    finally:
        GlobalHydra.instance().clear()
    assert calls == ["yinyang_mlp"]
    assert (tmp_path / "run" / "metrics.json").is_file()


def _metrics_only(cfg, run_dir):
    return {"train/acc": 1.0}
