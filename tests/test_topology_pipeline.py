"""task=topology end to end on a tiny Yin-Yang model: metrics under topology/..., CSVs, figures,
beta_0 per layer against representations extracted here, one-line config errors, and the
isometry aggregation over a sweep's job directories."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import FAST, compose_cfg, run_cfg
from kaelab.errors import ConfigError
from kaelab.topology import betti as B

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
    with open(run / "topology_layers.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["beta0"]) for r in rows] == m["topology/beta0_layers"]
    with open(run / "topology_curves.csv") as f:
        curves = list(csv.DictReader(f))
    check_curve_distances(m, curves, run / "topology_diagrams.csv")
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


def check_curve_distances(m: dict, rows: list[dict], diagrams_csv) -> None:
    """The curve metrics against the CSVs, recomputed here: the L1 distance is the trapezoid
    integral of |original - observable| over the grid divided by its range, ``distance`` their sum,
    the bottleneck GUDHI's on the written diagrams clipped at eps_max. Catches a distance taken
    between the wrong curves (e.g. original against itself: 0), a wrong normalisation, or metrics
    that do not describe the curves written."""
    import gudhi

    grid = np.array([float(r["eps"]) for r in rows])
    assert m["topology/curves/eps_max"] == pytest.approx(grid[-1])
    with open(diagrams_csv) as f:
        bars = list(csv.DictReader(f))
    for k in (0, 1):
        a, b = (np.array([float(r[f"{s}_beta{k}"]) for r in rows]) for s in ("original", "observable"))
        expected = np.trapezoid(np.abs(a - b), grid) / (grid[-1] - grid[0])
        assert m[f"topology/curves/distance_h{k}"] == pytest.approx(expected, abs=1e-12), k
        dg = {s: [(float(r["birth"]), float(r["death"])) for r in bars if r["space"] == s and int(r["dim"]) == k]
              for s in ("original", "observable")}  # fmt: skip
        clipped = {s: B.truncate_diagram(np.array(d).reshape(-1, 2), grid[-1]) for s, d in dg.items()}
        expected = gudhi.bottleneck_distance(clipped["original"], clipped["observable"], 0.0)
        assert m[f"topology/curves/bottleneck_h{k}"] == pytest.approx(expected), k
    total = m["topology/curves/distance_h0"] + m["topology/curves/distance_h1"]
    assert m["topology/curves/distance"] == pytest.approx(total)


def test_topology_reuses_cached_kae_and_gudhi_counts_as_mst(tiny_run, tmp_path):
    tmp, first = tiny_run
    (tmp_path / "cache").symlink_to(tmp / "cache")
    again = run_cfg([*TINY, "topology.backend=gudhi", "topology.curves=false", "topology.figures=false"], tmp_path)
    assert again["base/cache_hit"] is True and again["kae/cache_hit"] is True
    assert again["topology/backend"] == "gudhi"
    assert again["topology/beta0_layers"] == first["topology/beta0_layers"]  # gudhi == mst
    assert again["topology/beta0_steps"] == first["topology/beta0_steps"]


def layer_names(m: dict) -> list[str]:
    """The measured layers in depth order, from the ``topology/layer/<j>_<name>/beta0`` keys."""
    keys = [k.split("/")[2] for k in m if k.startswith("topology/layer/")]
    return [k.split("_", 1)[1] for k in sorted(keys, key=lambda k: int(k.split("_", 1)[0]))]


def independent_beta0(tmp, names: list[str], fit_split: str) -> list[int]:
    """beta_0 at eps 0.3 per layer of the test split, the representations taken here with forward
    hooks on the cached base network (not the stage's representation cache) and preprocessed here
    (Sec. 3.3: centre, project on the principal directions, scale to Frobenius norm 100) with a fit
    on ``fit_split``."""
    from kaelab.base_model import base_model

    cfg = compose_cfg(TINY, tmp)
    base = base_model(cfg, tmp / "independent")
    modules = dict(base.net.named_modules())
    net = base.net.eval()
    out: dict[str, torch.Tensor] = {}
    hooks = [modules[n].register_forward_hook(lambda _m, _i, y, n=n: out.__setitem__(n, y.clone())) for n in names]
    reps: dict[str, dict[str, torch.Tensor]] = {}
    with torch.no_grad():
        for split in {"train", "test", fit_split}:
            net(base.datamodule.tensors(split)[0])
            reps[split] = {n: out[n].double().flatten(1) for n in names}
    for h in hooks:
        h.remove()
    beta0 = []
    for n in names:
        fit = reps[fit_split][n]
        mean = fit.mean(0)
        vh = torch.linalg.svd(fit - mean, full_matrices=False)[2]
        factor = 100.0 / torch.linalg.norm((fit - mean) @ vh.T)
        beta0.append(B.beta0((reps["test"][n] - mean) @ vh.T * factor, 0.3))
    return beta0


def test_layer_beta0_matches_betti_on_independently_extracted_representations(tiny_run):
    """The stage's beta_0 per layer equals ``betti.beta0`` on the test representations taken and
    preprocessed here (fit on the training split). Catches a wrong layer measured, a layer's
    preprocessing that is not Sec. 3.3's, a wrong eps or points, and a mislabelled metric."""
    tmp, m = tiny_run
    names = layer_names(m)
    assert len(names) == 6
    assert m["topology/beta0_layers"] == independent_beta0(tmp, names, "train")
    assert [m[f"topology/layer/{j}_{n}/beta0"] for j, n in enumerate(names)] == m["topology/beta0_layers"]


def test_layer_preprocessing_is_fitted_on_the_training_split(tiny_run):
    """Fitting each layer's preprocessing on the measured test points instead gives other beta_0
    here (the Frobenius scale of 300 test rows is not that of 400 training rows), and the stage
    agrees with the training fit: fails if the stage fits on the points it measures."""
    tmp, m = tiny_run
    names = layer_names(m)
    on_train, on_test = independent_beta0(tmp, names, "train"), independent_beta0(tmp, names, "test")
    assert on_train != on_test  # the data tells the two fits apart
    assert m["topology/beta0_layers"] == on_train


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
    tiny = [o for o in TINY if not o.startswith(("logger.", "~logger."))]  # the CSV logger is not in this set
    overrides = [*tiny, "logger=tensorboard", "topology.steps=false", "topology.curves=false"]
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
