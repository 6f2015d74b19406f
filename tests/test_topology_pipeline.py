"""task=topology end to end on a tiny Yin-Yang model: metrics under topology/..., CSVs, figures,
one-line config errors, and the isometry aggregation over a sweep's job directories."""

import csv
import json
import shutil

import pytest
from omegaconf import OmegaConf

from conftest import FAST, run_cfg
from kaelab.errors import ConfigError

TINY = [
    "+experiment=yinyang_topology",
    "data.n_train=400",
    "data.n_val=100",
    "data.n_test=300",
    "data.batch_size=100",
    "model.epochs=3",
    "kae.epochs=3",
    "kae.batch_size=200",
    "kae.k=12",
    "trainer.num_threads=1",
    "topology.eps_num=30",
    "topology.figure_steps=4",
    *FAST,
]
FIGURES = [
    "topology_layers_pca.png",
    "topology_kae_steps_pca.png",
    "topology_beta0.png",
    "topology_betti_curves.png",
    "topology_observable_pca.png",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("topology")
    metrics = run_cfg(TINY, tmp)
    return tmp, metrics


def test_topology_metrics_csvs_and_figures(tiny_run):
    tmp, m = tiny_run
    run = tmp / "run"
    assert json.loads((run / "metrics.json").read_text())["topology/beta0_layers"] == m["topology/beta0_layers"]
    assert len(m["topology/beta0_layers"]) == 6  # input layer + 5 blocks
    assert len(m["topology/beta0_steps"]) == 13  # k + 1 decoded states
    assert all(1 <= b <= 300 for b in m["topology/beta0_layers"] + m["topology/beta0_steps"])
    assert m["topology/n_points"] == 300 and m["topology/layer_eps"] == 0.3
    for key in ("distance", "distance_h0", "distance_h1", "bottleneck_h0", "bottleneck_h1", "eps_max"):
        assert m[f"topology/curves/{key}"] >= 0, key
    with open(run / "topology_layers.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["beta0"]) for r in rows] == m["topology/beta0_layers"]
    with open(run / "topology_curves.csv") as f:
        curves = list(csv.DictReader(f))
    assert len(curves) == 30 and set(curves[0]) == {
        "eps",
        "original_beta0",
        "original_beta1",
        "observable_beta0",
        "observable_beta1",
    }
    assert int(curves[0]["original_beta0"]) == 300 and int(curves[-1]["original_beta0"]) == 1
    for name in FIGURES:
        png = run / name
        assert png.is_file() and png.stat().st_size > 10_000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(m["topology/figures"]) == sorted(FIGURES)
    assert (run / "topology_diagrams.csv").is_file() and (run / "topology_steps.csv").is_file()


def test_topology_reuses_cached_kae_and_matches_pure_functions(tiny_run, tmp_path):
    tmp, first = tiny_run
    (tmp_path / "cache").symlink_to(tmp / "cache")
    again = run_cfg([*TINY, "topology.backend=gudhi", "topology.curves=false", "topology.figures=false"], tmp_path)
    assert again["base/cache_hit"] is True and again["kae/cache_hit"] is True
    assert again["topology/beta0_layers"] == first["topology/beta0_layers"]  # gudhi == mst
    assert again["topology/beta0_steps"] == first["topology/beta0_steps"]


def test_scale_matched_to_reference_layers(tiny_run, tmp_path):
    tmp, first = tiny_run
    (tmp_path / "cache").symlink_to(tmp / "cache")
    m = run_cfg([*TINY, "topology.reference_layers=[100,1,1,1,1,1]", "topology.curves=false"], tmp_path)
    assert m["topology/beta0_layers"] == first["topology/beta0_layers"]  # the configured eps is unchanged
    assert m["topology/matched/beta0_layers"][0] == 100 and len(m["topology/matched/beta0_layers"]) == 6
    assert m["topology/matched/step_eps"] == pytest.approx(0.3 * m["topology/matched/scale"])
    assert len(m["topology/matched/beta0_steps"]) == 13
    with open(tmp_path / "run" / "topology_layers.csv") as f:
        assert [int(r["beta0_matched"]) for r in csv.DictReader(f)] == m["topology/matched/beta0_layers"]


def test_figures_go_to_tensorboard(tiny_run, tmp_path):
    tmp, _ = tiny_run
    (tmp_path / "cache").symlink_to(tmp / "cache")
    overrides = [*TINY, "logger=tensorboard", "topology.steps=false", "topology.curves=false"]
    m = run_cfg(overrides, tmp_path)
    assert m["topology/figures"] == ["topology_beta0.png", "topology_layers_pca.png"]
    events = list((tmp_path / "run" / "topology" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and max(e.stat().st_size for e in events) > 10_000  # scalars and two images


@pytest.mark.parametrize(
    "override,match",
    [
        ("topology.layer_eps=-0.5", "topology.layer_eps=-0.5 must be"),
        ("topology.backend=ripser", "unknown topology backend"),
        ("topology.maxdim=2", "topology.maxdim=2"),
        ("topology.split=holdout", "topology.split must be one of"),
        ("topology.eps_num=1", "topology.eps_num=1"),
    ],
)
def test_bad_topology_config_fails_before_training(override, match, tmp_path):
    with pytest.raises(ConfigError, match=match) as err:
        run_cfg([*TINY, override], tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache").exists()  # nothing trained


def test_subsample_larger_than_split_is_an_error(tiny_run, tmp_path):
    tmp, _ = tiny_run
    (tmp_path / "cache").symlink_to(tmp / "cache")
    with pytest.raises(ConfigError, match=r"topology.n_points .* larger than the data \(300 points\)"):
        run_cfg([*TINY, "topology.n_points=301"], tmp_path)


def test_isometry_aggregation_over_job_dirs(tiny_run, tmp_path, capsys):
    """Three fake jobs (copies of one run, observable curves perturbed by lambda) -> overlay + ranking."""
    from kaelab.topology.isometry import main

    tmp, _ = tiny_run
    run = tmp / "run"
    sweep = tmp_path / "sweep"
    for num, iso, shift in ((0, 0.0, 3), (1, 1e-3, 1), (2, 1.0, 0)):
        job = sweep / f"{num}_kae.lambdas.iso={iso}"
        (job / ".hydra").mkdir(parents=True)
        shutil.copy(run / "topology_diagrams.csv", job)
        with open(run / "topology_curves.csv") as f:
            rows = list(csv.DictReader(f))
        for r in rows:  # observable = original + shift (shift 0: identical to the original)
            for k in (0, 1):
                r[f"observable_beta{k}"] = str(int(float(r[f"original_beta{k}"])) + shift)
        with open(job / "topology_curves.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        OmegaConf.save(OmegaConf.create({"seed": 0, "kae": {"lambdas": {"iso": iso}}}), job / ".hydra" / "config.yaml")
    result = main([str(sweep)])
    assert [j["iso"] for j in result["jobs"]] == [0.0, 1e-3, 1.0]
    assert [round(j["curve_distance"], 6) for j in result["jobs"]] == [6.0, 2.0, 0.0]
    assert result["closest_iso_by_curve_distance"] == 1.0
    assert (sweep / "isometry.json").is_file() and (sweep / "isometry_betti_curves.png").stat().st_size > 10_000
    assert "closest to the original: lambda_iso=1" in capsys.readouterr().out
