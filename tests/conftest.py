"""Shared test fixtures: config composition, in-process runs and CLI runs against real data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from kaelab.config import register_configs

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
register_configs()


def find_data_dir() -> Path | None:
    """$KAELAB_DATA_DIR, else this workplace's MNIST copy (../shared/data next to the repo, or
    /work/shared/data for a clone elsewhere)."""
    for cand in (os.environ.get("KAELAB_DATA_DIR"), REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if cand and (Path(cand) / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file():
            return Path(cand).resolve()
    return None


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """MNIST root for the tests; downloads with torchvision when no local copy exists."""
    found = find_data_dir()
    if found is not None:
        return found
    root = REPO / "outputs" / "data"
    from kaelab.data.mnist import load_mnist

    load_mnist(root, train=False, download=True)  # raises a clear DataNotFoundError offline
    return root


def compose_cfg(overrides: list[str], tmp_path: Path, data_dir: Path | None = None) -> DictConfig:
    """Compose the Hydra config as ``python -m kaelab`` would, with paths under ``tmp_path``."""
    paths = [
        f"paths.run_dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.output_root={tmp_path}",
    ]
    if data_dir is not None:
        paths.append(f"paths.data_dir={data_dir}")
    with initialize_config_module(version_base="1.3", config_module="kaelab.conf"):
        cfg = compose(config_name="config", overrides=paths + list(overrides))
    return cfg


def run_cfg(overrides: list[str], tmp_path: Path, data_dir: Path | None = None) -> dict:
    """Run the pipeline in-process and return its metrics (also written to metrics.json)."""
    from kaelab.pipeline import run

    return run(compose_cfg(overrides, tmp_path, data_dir))


def run_cli(args: list[str], tmp_path: Path, data_dir: Path | None = None, timeout: int = 600):
    """``python -m kaelab ARGS`` in a subprocess; returns the CompletedProcess."""
    env = dict(os.environ)
    env["KAELAB_OUTPUT_DIR"] = str(tmp_path)
    if data_dir is not None:
        env["KAELAB_DATA_DIR"] = str(data_dir)
    cmd = [sys.executable, "-m", "kaelab", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


FAST = ["callbacks=minimal", "~logger.csv"]
# a small Yin-Yang base model + KAE (seconds, not minutes) shared by the KAE, edit and topology tests
YY_SMALL_KAE = [
    "data.n_train=1000",
    "data.n_val=200",
    "data.n_test=500",
    "data.batch_size=100",
    "model.epochs=60",
    "kae.epochs=150",
    "kae.batch_size=250",
    *FAST,
]
