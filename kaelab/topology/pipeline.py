"""``task=topology``: Betti numbers through the network's depth and through the KAE's steps.

KAE paper, Sec. 4.1-4.2 and Figures 2, 3, B1, B2. From the cached base model and KAE:

1. beta_0 at ``topology.layer_eps`` of every representation of the base model, each preprocessed
   as in Sec. 3.3 (mean-centre, PCA, Frobenius norm ``kae.scale`` of the training matrix; fitted
   on the training split, applied to ``topology.split``): ``depth_beta0``;
2. beta_0 at ``topology.step_eps`` of the KAE's k+1 decoded intermediate states (in the
   preprocessed space of x_j, where the decoder maps): ``steps_beta0``;
3. Betti curves (beta_0, beta_1) of x_j in its preprocessed ("original") space and in the KAE's
   observable space (the encoder's image), with their distance (L1 between curves, bottleneck
   between diagrams): ``xj_betti_curves``;
4. the figures: ``topology_figures``.

The persistence backends (``topology.backend``, ``topology.h1_backend``) are built once, from a
name or a ``_target_`` config (kaelab.topology.backends). Writes ``topology/...`` metrics
(metrics.json), ``topology_layers.csv``, ``topology_steps.csv``, ``topology_curves.csv``,
``topology_diagrams.csv`` and the figures into the run directory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from kaelab.base_model import base_model
from kaelab.errors import ConfigError
from kaelab.fileio import optional_output, write_csv
from kaelab.koopman.config import KAEConfig
from kaelab.koopman.pipeline import (
    KAEArtifact,
    Representations,
    base_representations,
    cached_kae,
    kae_layers,
)
from kaelab.koopman.preprocessing import Chain, FrobeniusNormalize, MeanCenter, PCAProjection, Transform
from kaelab.metrics import write_metrics
from kaelab.models.positions import positions_metrics
from kaelab.topology import betti as B
from kaelab.topology.backends import backend_label, resolve_backend
from kaelab.topology.config import class_groups
from kaelab.training import build_loggers, log_metrics_to

log = logging.getLogger(__name__)

SUBSAMPLES = ("n_points", "curve_points", "figure_points")  # topology.<key>: subsample of the split


# ----------------------------------------------------------------------------------------- pieces
def layer_preprocessor(train: torch.Tensor, q: int | None, scale: float) -> Chain:
    """Sec. 3.3 for one layer: centre, project on the top-q principal directions, normalise."""
    q = None if q is None else min(q, train.shape[1])
    return Chain(MeanCenter(), PCAProjection(q), FrobeniusNormalize(scale)).fit(train)


def eps_for_beta0(lengths: np.ndarray, target: int) -> float | None:
    """The smallest eps with beta_0(eps) = target (None if no eps gives it), from MST lengths."""
    desc = np.sort(lengths)[::-1]
    if not 1 <= target <= len(desc) + 1:
        return None
    eps = float(desc[target - 1]) if target <= len(desc) else 0.0
    return eps if int(B.beta0_from_mst(lengths, [eps])[0]) == target else None


def selected_steps(k: int, num: int) -> list[int]:
    """``num`` evenly spaced steps of 0..k, first and last included."""
    return sorted({int(round(s)) for s in np.linspace(0, k, min(num, k + 1))})


@torch.no_grad()
def kae_trajectory(kae, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Decoded states [k+1, n, d] of the KAE started from preprocessed x_i."""
    kae.eval()
    return torch.cat([kae.trajectory(xb)[1] for xb in x.split(batch_size)], dim=1)


@dataclass
class TopologyInputs:
    """What the stage measures: the base model's representations, the KAE (None without
    ``cfg.kae``), the layers x_i and x_j, the subsamples of ``topology.split`` (``SUBSAMPLES``),
    and the preprocessing settings (``kae.q``, ``kae.scale``)."""

    names: list[str]
    src: str
    tgt: str
    data: Representations
    art: KAEArtifact | None
    subsample: dict[str, torch.Tensor]
    split: str
    q: int | None
    scale: float
    base_cache_hit: bool

    def points(self, layer: str, subsample: str) -> torch.Tensor:
        """Raw representations of ``layer`` at one subsample of the measured split."""
        return self.data.reps[self.split][layer][self.subsample[subsample]]


def topology_inputs(cfg: DictConfig, tc: DictConfig, run_dir: Path) -> TopologyInputs:
    """The cached base model, its representations, the subsamples and the cached KAE."""
    src, tgt = kae_layers(cfg) if cfg.kae is not None else (None, None)
    base = base_model(cfg, run_dir / "base_model")
    names = base.trajectory.names
    src, tgt = src or names[0], tgt or names[-1]
    data = base_representations(cfg, base, (names if tc.layers else []) + [src, tgt])
    if tc.split not in data.inputs:
        raise ConfigError(f"topology.split={tc.split!r} is not a split of the data ({', '.join(data.inputs)})")
    n = len(data.labels[tc.split])  # samples: inputs, or token positions (model.positions)
    subsample = {
        key: B.subsample_indices(n, tc[key], tc.seed, f"topology.{key} (of the {tc.split} split)") for key in SUBSAMPLES
    }
    art = cached_kae(cfg, base, data, src, tgt, run_dir / "kae") if cfg.kae is not None else None
    q, scale = (cfg.kae.q, float(cfg.kae.scale)) if cfg.kae is not None else (None, KAEConfig.scale)
    return TopologyInputs(names, src, tgt, data, art, subsample, tc.split, q, scale, base.cache_hit)


def layer_preprocessors(inp: TopologyInputs) -> dict[str, Transform]:
    """Sec. 3.3 for every layer, fitted on the training split: the KAE's own fit for x_i and x_j
    (without x_i's rotation onto x_j), the same fit made here for every other layer."""
    fitted = {inp.art.source: inp.art.prep.source, inp.art.target: inp.art.prep.target} if inp.art else {}
    return {
        name: fitted.get(name) or layer_preprocessor(inp.data.reps["train"][name], inp.q, inp.scale)
        for name in inp.names
    }


def match_reference(points: torch.Tensor, reference: int, layer_eps: float) -> dict[str, Any]:
    """The eps at which ``points`` (layer 0) has the published beta_0 ``reference`` (the paper's
    preprocessing scale is not kaelab's), and its ratio to ``layer_eps``; {} if no eps gives it.
    From the cloud's minimum spanning tree, whatever backend counts: the tree gives beta_0 at every
    eps at once (Rips dimension-0 deaths are its edge lengths)."""
    eps = eps_for_beta0(B.mst_edges(points)[1], reference)
    if eps is None:
        return {}
    return {"layer_eps": eps, "scale": eps / layer_eps if layer_eps > 0 else float("nan")}


# --------------------------------------------------------------------------------- measurements
@dataclass
class Depth:
    """beta_0 through depth: at ``topology.layer_eps`` per layer, ``matched`` (layer_eps, scale,
    beta0_layers at the eps matched to ``topology.reference_layers``), the PCA panels."""

    beta0: list[int]
    matched: dict[str, Any]
    panels: dict[str, torch.Tensor]
    metrics: dict[str, Any]


def depth_beta0(tc: DictConfig, inp: TopologyInputs, backend: Any) -> Depth:
    """beta_0 of every layer's preprocessed representation (Figure 3 top left; panels: Figures
    B1/B2), at ``topology.layer_eps`` and at the eps where layer 0 has the reference's beta_0."""
    beta0, at_matched, panels, matched = [], [], {}, {}
    for j, (name, prep) in enumerate(layer_preprocessors(inp).items()):
        pts = prep.transform(inp.points(name, "n_points"))
        if j == 0 and tc.reference_layers:
            matched = match_reference(pts, int(tc.reference_layers[0]), tc.layer_eps)
        values = B.betti_curves(pts, [tc.layer_eps] + ([matched["layer_eps"]] if matched else []), 0, backend)[0]
        beta0.append(int(values[0]))
        at_matched += [int(v) for v in values[1:]]
        if tc.figures:
            panels[f"L{j} ({name}): beta_0={beta0[-1]}"] = prep.transform(inp.points(name, "figure_points"))
        log.info("layer %d %s: beta_0(%.4g) = %d on %d points", j, name, tc.layer_eps, beta0[-1], len(pts))
    if matched:
        matched["beta0_layers"] = at_matched
        log.info("at eps %.4g (layer 0 has %d components): beta_0 per layer %s", matched["layer_eps"],
                 tc.reference_layers[0], at_matched)  # fmt: skip
    metrics = {f"topology/layer/{j}_{name}/beta0": b for j, (name, b) in enumerate(zip(inp.names, beta0, strict=True))}
    metrics["topology/beta0_layers"] = beta0
    metrics.update({f"topology/matched/{k}": v for k, v in matched.items()})
    return Depth(beta0, matched, panels, metrics)


@dataclass
class Steps:
    """beta_0 of the KAE's decoded steps: at ``topology.step_eps``, at ``matched_eps`` (the step
    eps times the depth's matched scale; None without one), the PCA panels of selected steps."""

    beta0: list[int]
    matched: list[int]
    matched_eps: float | None
    panels: dict[str, torch.Tensor]
    metrics: dict[str, Any]


def steps_beta0(tc: DictConfig, inp: TopologyInputs, backend: Any, scale: float | None) -> Steps:
    """beta_0 of each of the KAE's k+1 decoded states started from x_i (Figure 3 top right;
    panels: Figure 3 bottom)."""
    art = inp.art
    decoded = kae_trajectory(art.kae, art.prep.transform_source(inp.points(inp.src, "n_points")))
    matched_eps = tc.step_eps * scale if scale is not None and np.isfinite(scale) else None
    eps = [tc.step_eps] + ([matched_eps] if matched_eps is not None else [])
    values = [B.betti_curves(state, eps, 0, backend)[0] for state in decoded]
    beta0, matched = [int(v[0]) for v in values], [int(v[1]) for v in values if len(v) > 1]
    k, panels = len(beta0) - 1, {}
    if tc.figures:
        fig = kae_trajectory(art.kae, art.prep.transform_source(inp.points(inp.src, "figure_points")))
        panels = {f"step {t}/{k}: beta_0={beta0[t]}": fig[t] for t in selected_steps(k, tc.figure_steps)}
    log.info("KAE steps: beta_0(%.4g) = %s", tc.step_eps, beta0)
    metrics: dict[str, Any] = {}
    if matched:
        metrics.update({"topology/matched/step_eps": matched_eps, "topology/matched/beta0_steps": matched})
    metrics["topology/beta0_steps"] = beta0
    metrics["topology/beta0_step_first"], metrics["topology/beta0_step_last"] = beta0[0], beta0[-1]
    metrics["topology/beta0_steps_nonincreasing"] = all(a >= b for a, b in zip(beta0[:-1], beta0[1:], strict=True))
    return Steps(beta0, matched, matched_eps if matched else None, panels, metrics)


@dataclass
class Curves:
    """Betti curves of x_j per space (``original``, and ``observable`` with a KAE) on ``grid``."""

    grid: np.ndarray
    clouds: dict[str, torch.Tensor]
    diagrams: dict[str, list[np.ndarray]]
    curves: dict[str, dict[int, np.ndarray]]
    metrics: dict[str, Any]


def xj_clouds(inp: TopologyInputs) -> dict[str, torch.Tensor]:
    """x_j preprocessed (the KAE's fit, or the same fit made here without a KAE), and its image
    under the KAE's encoder."""
    x = inp.points(inp.tgt, "curve_points")
    if inp.art is None:
        return {"original": layer_preprocessor(inp.data.reps["train"][inp.tgt], inp.q, inp.scale).transform(x)}
    original = inp.art.prep.transform_target(x)
    with torch.no_grad():
        inp.art.kae.eval()
        return {"original": original, "observable": inp.art.kae.encoder(original)}


def curve_distances(maxdim: int, eps_max: float, grid: np.ndarray, diagrams, curves) -> dict[str, Any]:
    """L1 distance between the two spaces' Betti curves and bottleneck distance between their
    diagrams (truncated at ``eps_max``), per dimension; ``distance``: the L1 distances summed."""
    metrics: dict[str, Any] = {}
    for k in range(maxdim + 1):
        original, observable = curves["original"][k], curves["observable"][k]
        metrics[f"topology/curves/distance_h{k}"] = B.curve_distance(original, observable, grid)
        metrics[f"topology/curves/bottleneck_h{k}"] = B.bottleneck(
            B.truncate_diagram(diagrams["original"][k], eps_max), B.truncate_diagram(diagrams["observable"][k], eps_max)
        )
    metrics["topology/curves/distance"] = sum(metrics[f"topology/curves/distance_h{k}"] for k in range(maxdim + 1))
    return metrics


def xj_betti_curves(tc: DictConfig, inp: TopologyInputs, backend: Any, h1_backend: Any) -> Curves:
    """Betti curves (beta_0..beta_maxdim) of x_j in the original and the observable space
    (Figure 2B) on ``topology.eps_num`` values from ``eps_min`` to ``eps_max`` (None: 1.1 x the
    longest MST edge of the original cloud, where beta_0 is 1)."""
    clouds = xj_clouds(inp)
    eps_max = tc.eps_max
    if eps_max is None:
        eps_max = max(1.1 * float(B.mst_edges(clouds["original"])[1].max(initial=0.0)), tc.eps_min + 1e-12)
    grid = B.eps_grid(tc.eps_min, eps_max, tc.eps_num)
    diagrams = {
        space: B.persistence_diagrams(cloud, tc.maxdim, eps_max, backend, h1_backend=h1_backend)
        for space, cloud in clouds.items()
    }
    curves = {space: {k: B.betti_from_bars(d, grid) for k, d in enumerate(dg)} for space, dg in diagrams.items()}
    metrics = {"topology/curves/eps_max": eps_max, "topology/curves/n_points": len(inp.subsample["curve_points"])}
    metrics.update({f"topology/curves/{s}/beta{k}_max": int(v.max()) for s, c in curves.items() for k, v in c.items()})
    if "observable" in curves:
        metrics.update(curve_distances(tc.maxdim, eps_max, grid, diagrams, curves))
    return Curves(grid, clouds, diagrams, curves, metrics)


# ---------------------------------------------------------------------------------------- outputs
def write_layers_csv(path: Path, tc: DictConfig, inp: TopologyInputs, depth: Depth) -> None:
    matched = depth.matched.get("beta0_layers", [None] * len(depth.beta0))
    n = len(inp.subsample["n_points"])
    rows = [
        [j, name, b, tc.layer_eps, m, depth.matched.get("layer_eps"), n]
        for j, (name, b, m) in enumerate(zip(inp.names, depth.beta0, matched, strict=True))
    ]
    header = ["layer_index", "layer", "beta0", "eps", "beta0_matched", "eps_matched", "n_points"]
    write_csv(path, header, rows)


def write_steps_csv(path: Path, tc: DictConfig, inp: TopologyInputs, steps: Steps) -> None:
    matched = steps.matched or [None] * len(steps.beta0)
    n = len(inp.subsample["n_points"])
    rows = [
        [t, b, tc.step_eps, m, steps.matched_eps, n] for t, (b, m) in enumerate(zip(steps.beta0, matched, strict=True))
    ]
    write_csv(path, ["step", "beta0", "eps", "beta0_matched", "eps_matched", "n_points"], rows)


def write_curves_csv(run_dir: Path, maxdim: int, curves: Curves) -> None:
    """``topology_curves.csv`` (eps and every space's beta_k) and ``topology_diagrams.csv``."""
    dims = range(maxdim + 1)
    header = ["eps"] + [f"{s}_beta{k}" for s in curves.curves for k in dims]
    cols = [curves.grid] + [curves.curves[s][k] for s in curves.curves for k in dims]
    write_csv(run_dir / "topology_curves.csv", header, [list(r) for r in zip(*[c.tolist() for c in cols], strict=True)])
    bars = [[s, k, b, d] for s, dg in curves.diagrams.items() for k, bs in enumerate(dg) for b, d in bs.tolist()]
    write_csv(run_dir / "topology_diagrams.csv", ["space", "dim", "birth", "death"], bars)


def beta0_figure(run_dir: Path, tc: DictConfig, inp: TopologyInputs, depth: Depth | None, steps: Steps | None):
    """beta_0 against layer and KAE step, beside the published values and the matched eps."""
    from kaelab.viz.topology import plot_beta0_depth

    layer_ref: dict[str, list[float]] = {}
    step_ref: dict[str, list[float]] = {}
    if tc.reference_layers:
        layer_ref["published (topology.reference_layers)"] = list(tc.reference_layers)
    if depth is not None and depth.matched:
        layer_ref[f"kaelab at eps={depth.matched['layer_eps']:.3g} (L0 matched)"] = depth.matched["beta0_layers"]
    if steps is not None and steps.matched:
        step_ref[f"at eps={steps.matched_eps:.3g} (same scale factor)"] = steps.matched
    return plot_beta0_depth(
        run_dir / "topology_beta0.png",
        inp.names if depth else None,
        depth.beta0 if depth else None,
        tc.layer_eps,
        steps.beta0 if steps else None,
        tc.step_eps,
        len(inp.subsample["n_points"]),
        layer_ref,
        step_ref,
    )


def curve_figures(cfg: DictConfig, run_dir: Path, inp: TopologyInputs, curves: Curves) -> dict[str, Path]:
    """Betti curves of x_j per space (Figure 2B) and its top-3 PCs in both spaces."""
    from kaelab.viz.topology import plot_betti_curves, plot_pca_panels

    n = len(inp.subsample["curve_points"])
    labels, class_names = figure_labels(cfg.topology, inp, "curve_points")
    names = {"original": "original space", "observable": "observable space (KAE encoder)"}
    styles = {names["original"]: {"c": "k", "lw": 2.0}, names["observable"]: {"c": "tab:red", "lw": 1.5, "ls": "--"}}
    images = {
        "topology/betti_curves": plot_betti_curves(
            curves.grid,
            {names[s]: c for s, c in curves.curves.items()},
            run_dir / "topology_betti_curves.png",
            f"{cfg.name}: Betti curves of x_j = {inp.tgt} ({n} {inp.split} points)",
            styles=styles,
        )
    }
    observable = curves.clouds.get("observable")
    if observable is not None:
        images["topology/observable_pca"] = plot_pca_panels(
            {f"x_j ({inp.tgt}), preprocessed": curves.clouds["original"], "x_j in observable space": observable},
            labels,
            run_dir / "topology_observable_pca.png",
            f"{cfg.name}: top-3 PCs of x_j in state and observable space ({n} points)",
            class_names=class_names,
        )
    return images


def figure_labels(tc: DictConfig, inp: TopologyInputs, subsample: str) -> tuple[np.ndarray, list[str] | None]:
    """The labels the figures colour a subsample by, and their names: the classes (names None), or
    with ``topology.groups`` each sample's group index (classes in no group: a last "other")."""
    labels = inp.data.labels[inp.split][inp.subsample[subsample]].numpy()
    groups = class_groups(tc.groups)
    if not groups:
        return labels, None
    codes = np.full(len(labels), len(groups), dtype=np.int64)
    for g, classes in enumerate(groups.values()):
        codes[np.isin(labels, classes)] = g
    return codes, [*groups, "other"]


def topology_figures(cfg, tc, inp: TopologyInputs, depth, steps, curves, run_dir: Path) -> dict[str, Path]:
    """The stage's figures (Figures 2, 3, B1, B2) as PNGs in the run directory, by logger key."""
    from kaelab.viz.topology import plot_pca_panels

    labels, names = figure_labels(tc, inp, "figure_points")
    pts = f"{len(inp.subsample['figure_points'])} {inp.split} points"
    images: dict[str, Path] = {}
    if depth is not None and depth.panels:
        title = f"top-3 PCs of each layer's preprocessed representation ({pts}; beta_0 at eps={tc.layer_eps})"
        path = run_dir / "topology_layers_pca.png"
        images["topology/layers_pca"] = plot_pca_panels(
            depth.panels, labels, path, f"{cfg.name}: {title}", class_names=names
        )
    if steps is not None:
        title = f"top-3 PCs of the KAE's decoded steps ({pts}; beta_0 at eps={tc.step_eps})"
        path = run_dir / "topology_kae_steps_pca.png"
        images["topology/kae_steps_pca"] = plot_pca_panels(
            steps.panels, labels, path, f"{cfg.name}: {title}", class_names=names
        )
    if depth is not None or steps is not None:
        images["topology/beta0_depth"] = beta0_figure(run_dir, tc, inp, depth, steps)
    if curves is not None:
        images.update(curve_figures(cfg, run_dir, inp, curves))
    return images


def log_topology(cfg: DictConfig, run_dir: Path, metrics: dict[str, Any], images: dict[str, Path]) -> None:
    """The metrics and figures to the configured loggers (``run_dir/topology``)."""
    loggers = build_loggers(cfg.logger, run_dir / "topology", f"{cfg.name}-topology")
    log_metrics_to(loggers, metrics)
    if images:
        from kaelab.viz.dmd import log_images

        log_images(loggers, images)
    for lg in loggers:  # flush the images (TensorBoard writes them on its own schedule otherwise)
        lg.finalize("success")


def timed(metrics: dict[str, Any], key: str, fn: Callable, *args: Any):
    """``fn(*args)``, its ``.metrics`` merged into ``metrics`` and its seconds under ``key``."""
    t0 = time.perf_counter()
    result = fn(*args)
    metrics.update(result.metrics)
    metrics[key] = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------------------------------ stage
def topology_task(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """``cfg.topology`` on the cached base model and KAE: beta_0 through depth and through the
    KAE's steps, Betti curves of x_j, figures; CSVs and figures in ``run_dir``, metrics returned.
    The group is checked before (``kaelab.pipeline.run``: ``check_topology_config``)."""
    tc, t_start = cfg.topology, time.perf_counter()
    backend = resolve_backend(tc.backend, "topology.backend", collapse=tc.collapse_edges)
    h1_backend = resolve_backend(tc.h1_backend, "topology.h1_backend", collapse=tc.collapse_edges)
    inp = topology_inputs(cfg, tc, run_dir)
    metrics: dict[str, Any] = {"topology/backend": backend_label(tc.backend), "topology/split": tc.split}
    metrics.update({"topology/n_points": len(inp.subsample["n_points"]), "base/cache_hit": inp.base_cache_hit})
    metrics.update(positions_metrics(inp.data.positions, inp.data.where))
    metrics.update({"topology/layer_eps": tc.layer_eps, "topology/step_eps": tc.step_eps})
    if inp.art is not None:
        metrics.update({"kae/cache_hit": inp.art.cache_hit, "kae/key": inp.art.key})
    depth = steps = curves = None
    if tc.layers:
        depth = timed(metrics, "topology/layers_time_s", depth_beta0, tc, inp, backend)
    if tc.steps and inp.art is not None:
        scale = depth.matched.get("scale") if depth is not None else None
        steps = timed(metrics, "topology/steps_time_s", steps_beta0, tc, inp, backend, scale)
    if tc.curves:
        curves = timed(metrics, "topology/curves_time_s", xj_betti_curves, tc, inp, backend, h1_backend)
    metrics["topology/time_s"] = time.perf_counter() - t_start
    write_metrics(run_dir / "metrics.json", metrics)  # first: an output below that fails loses no result
    images = topology_outputs(cfg, inp, depth, steps, curves, run_dir, metrics)
    optional_output(metrics, "topology", "the run's loggers", lambda: log_topology(cfg, run_dir, metrics, images))
    return metrics


def topology_outputs(cfg, inp: TopologyInputs, depth, steps, curves, run_dir: Path, metrics: dict[str, Any]):
    """The CSV tables and (``topology.figures``) the figures, each optional (``optional_output``: one
    that cannot be written is noted in ``metrics``); returns the figures by logger key."""
    tc, stage = cfg.topology, "topology"
    layers_csv, steps_csv, curves_csv = (run_dir / f"topology_{n}.csv" for n in ("layers", "steps", "curves"))
    if depth is not None:
        optional_output(metrics, stage, str(layers_csv), lambda: write_layers_csv(layers_csv, tc, inp, depth))
    if steps is not None:
        optional_output(metrics, stage, str(steps_csv), lambda: write_steps_csv(steps_csv, tc, inp, steps))
    if curves is not None:
        optional_output(metrics, stage, str(curves_csv), lambda: write_curves_csv(run_dir, tc.maxdim, curves))
    if not tc.figures:
        return {}
    draw = lambda: topology_figures(cfg, tc, inp, depth, steps, curves, run_dir)  # noqa: E731
    images = optional_output(metrics, stage, f"{run_dir}/topology_*.png", draw) or {}
    metrics["topology/figures"] = sorted(p.name for p in images.values())
    return images
