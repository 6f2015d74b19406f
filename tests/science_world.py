"""A small Yin-Yang world shared by the tests/test_science_*.py files: one short base model and KAE
in one artifact cache per test session (under xdist, shared by the workers: the cache's lock makes
the first one build and the others reuse it), so that each stage (edit, spectrum, spectral edit,
path report, compare_retrain) runs end to end in a second or two on top of it.

The models are trained only briefly: the tests built on them recompute what a stage reports from
the cached artifacts by an independent route (the right split, the right operator, the right
steps), they do not judge how good the models are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import compose_cfg, run_cfg

WORLD = [
    "data.n_train=600",
    "data.n_val=100",
    "data.n_test=300",
    "data.batch_size=100",
    "model.epochs=15",
    "kae.epochs=5",
    "kae.batch_size=200",
    "callbacks=minimal",
    "~logger.csv",
    "trainer.num_threads=1",
]
KAE = ["+experiment=yinyang_kae", *WORLD]
EDIT = ["+experiment=yinyang_edit", *WORLD, "edit.figure=false"]
SPECTRUM = ["+experiment=yinyang_spectrum", *WORLD]


@pytest.fixture(scope="session", name="world_cache")
def world_cache_fixture(tmp_path_factory) -> Path:
    """The session's shared artifact cache (one directory for every xdist worker)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    cache = root / "science-world-cache"
    cache.mkdir(exist_ok=True)
    return cache


def in_world(overrides: list[str], tmp_path: Path, cache: Path) -> dict:
    """Run the pipeline with ``overrides`` in ``tmp_path`` against the world's cache."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    link = tmp_path / "cache"
    if not link.exists():
        link.symlink_to(cache)
    return run_cfg(overrides, tmp_path)


def world_cfg(overrides: list[str], tmp_path: Path):
    """The composed config of a run made by ``in_world(overrides, tmp_path, ...)``."""
    return compose_cfg(overrides, tmp_path)


def world_artifacts(overrides: list[str], tmp_path: Path):
    """(cfg, base model, representations, KAE) of a run in ``tmp_path``, from the cache."""
    from kaelab.koopman.pipeline import trained_kae

    cfg = world_cfg(overrides, tmp_path)
    base, data, art = trained_kae(cfg, tmp_path / "again", all_layers=True)
    return cfg, base, data, art
