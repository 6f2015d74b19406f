"""``task=topology``: Betti numbers through the network's depth and through the KAE's steps.

KAE paper, Sec. 4.1-4.2 and Figures 2, 3, B1, B2. From the cached base model and KAE:

1. beta_0 at ``topology.layer_eps`` of every representation of the base model, each preprocessed
   as in Sec. 3.3 (mean-centre, PCA, Frobenius norm ``kae.scale`` of the training matrix; fitted
   on the training split, applied to ``topology.split``);
2. beta_0 at ``topology.step_eps`` of the KAE's k+1 decoded intermediate states (in the
   preprocessed space of x_j, where the decoder maps);
3. Betti curves (beta_0, beta_1) of x_j in its preprocessed ("original") space and in the KAE's
   observable space (the encoder's image), with their distance (L1 between curves, bottleneck
   between diagrams).

Writes ``topology/...`` metrics (metrics.json), ``topology_layers.csv``, ``topology_steps.csv``,
``topology_curves.csv``, ``topology_diagrams.csv`` and the figures into the run directory.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from kaelab.base_model import base_model
from kaelab.errors import ConfigError, check_choice
from kaelab.fileio import write_csv
from kaelab.koopman.preprocessing import Chain, FrobeniusNormalize, MeanCenter, PCAProjection
from kaelab.topology import betti as B
from kaelab.training import build_loggers, log_metrics_to

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPACES = ("original", "observable")


def check_topology_config(cfg: DictConfig) -> DictConfig:
    """Fail fast (before any training) on invalid topology settings."""
    tc = cfg.topology
    if tc is None:
        raise ConfigError(
            "task=topology needs a topology config: add +topology=default or use +experiment=yinyang_topology"
        )
    B.check_backend(tc.backend)
    if tc.h1_backend not in ("gudhi", "giotto"):
        raise ConfigError(f"topology.h1_backend must be gudhi or giotto, got {tc.h1_backend!r}")
    B.check_eps(tc.layer_eps, "topology.layer_eps")
    B.check_eps(tc.step_eps, "topology.step_eps")
    B.check_eps(tc.eps_min, "topology.eps_min")
    if tc.eps_max is not None and not tc.eps_max > tc.eps_min:
        raise ConfigError(f"topology.eps_max={tc.eps_max} must be larger than topology.eps_min={tc.eps_min}")
    if tc.eps_num < 2:
        raise ConfigError(f"topology.eps_num={tc.eps_num} must be >= 2")
    if tc.maxdim not in (0, 1):
        raise ConfigError(f"topology.maxdim={tc.maxdim} must be 0 or 1")
    check_choice(tc.split, SPLITS, "topology.split")
    for key in ("n_points", "curve_points", "figure_points"):
        if tc[key] is not None and tc[key] < 1:
            raise ConfigError(f"topology.{key}={tc[key]} must be >= 1")
    if tc.figure_steps < 2:
        raise ConfigError(f"topology.figure_steps={tc.figure_steps} must be >= 2")
    return tc


def layer_preprocessor(train: torch.Tensor, q: int | None, scale: float) -> Chain:
    """Sec. 3.3 for one layer: centre, project on the top-q principal directions, normalise."""
    q = None if q is None else min(q, train.shape[1])
    return Chain(MeanCenter(), PCAProjection(q), FrobeniusNormalize(scale)).fit(train)


def beta0_values(pts: torch.Tensor, eps: list[float], backend: str) -> tuple[list[int], np.ndarray | None]:
    """beta_0 at each eps, and the MST edge lengths when the backend is ``mst`` (the whole curve)."""
    if backend == "mst":
        lengths = B.mst_edges(pts)[1]
        return [int(v) for v in B.beta0_from_mst(lengths, eps)], lengths
    return [int(v) for v in B.betti_curves(pts, eps, 0, backend)[0]], None


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


def topology_task(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    tc = check_topology_config(cfg)
    t_start = time.perf_counter()
    have_kae = cfg.kae is not None
    if have_kae:
        from kaelab.koopman.pipeline import check_kae_config

        src, tgt = check_kae_config(cfg)
    base = base_model(cfg, run_dir / "base_model")
    names = base.trajectory.names
    if not have_kae:
        src, tgt = names[0], names[-1]
    from kaelab.koopman.pipeline import base_representations, cached_kae

    data = base_representations(cfg, base, (names if tc.layers else []) + [src, tgt])
    if tc.split not in data.inputs:
        raise ConfigError(f"topology.split={tc.split!r} is not a split of the data ({', '.join(data.inputs)})")
    n_split = len(data.inputs[tc.split])
    idx = B.subsample_indices(n_split, tc.n_points, tc.seed, f"topology.n_points (of the {tc.split} split)")
    curve_idx = B.subsample_indices(
        n_split, tc.curve_points, tc.seed, f"topology.curve_points (of the {tc.split} split)"
    )
    fig_idx = B.subsample_indices(
        n_split, tc.figure_points, tc.seed, f"topology.figure_points (of the {tc.split} split)"
    )
    art = cached_kae(cfg, base, data, src, tgt, run_dir / "kae") if have_kae else None
    q = cfg.kae.q if have_kae else None
    scale = float(cfg.kae.scale) if have_kae else 100.0
    reps, labels = data.reps[tc.split], data.labels[tc.split]

    metrics: dict[str, Any] = {
        "topology/backend": tc.backend,
        "topology/split": tc.split,
        "topology/n_points": len(idx),
        "topology/layer_eps": tc.layer_eps,
        "topology/step_eps": tc.step_eps,
        "base/cache_hit": base.cache_hit,
    }
    if art is not None:
        metrics.update({"kae/cache_hit": art.cache_hit, "kae/key": art.key})
    images: dict[str, Path] = {}
    matched: dict[str, Any] = {}
    fig_panels_layers: dict[str, torch.Tensor] = {}
    layer_beta0: list[int] = []

    # 1. beta_0 through depth (Figure 3 top left) and the layers' PCs (Figures B1/B2)
    if tc.layers:
        rows = []
        t0 = time.perf_counter()
        # the KAE's own preprocessing of x_i and x_j is this same fit (without the rotation of x_i)
        fitted = {art.source: art.prep.source, art.target: art.prep.target} if art is not None else {}
        lengths: list[np.ndarray | None] = []
        for j, name in enumerate(names):
            prep = fitted.get(name) or layer_preprocessor(data.reps["train"][name], q, scale)
            pts = prep.transform(reps[name][idx])
            (b0,), mst = beta0_values(pts, [tc.layer_eps], tc.backend)
            layer_beta0.append(b0)
            lengths.append(mst)
            metrics[f"topology/layer/{j}_{name}/beta0"] = b0
            fig_panels_layers[f"L{j} ({name}): beta_0={b0}"] = prep.transform(reps[name][fig_idx])
            log.info("layer %d %s: beta_0(%.4g) = %d on %d points", j, name, tc.layer_eps, b0, len(idx))
        metrics["topology/beta0_layers"] = layer_beta0
        # the scale at which the first layer has the reference's beta_0 (the paper's preprocessing
        # scale is not ours): every layer at that eps, and the steps at step_eps times the same factor
        if tc.reference_layers and lengths[0] is not None:
            eps_m = eps_for_beta0(lengths[0], int(tc.reference_layers[0]))
            if eps_m is not None:
                matched = {"layer_eps": eps_m, "scale": eps_m / tc.layer_eps if tc.layer_eps > 0 else float("nan")}
                matched["beta0_layers"] = [int(B.beta0_from_mst(m, [eps_m])[0]) for m in lengths]
                metrics.update({f"topology/matched/{k}": v for k, v in matched.items()})
                log.info(
                    "at eps %.4g (layer 0 has %d components): beta_0 per layer %s",
                    eps_m,
                    tc.reference_layers[0],
                    matched["beta0_layers"],
                )
        rows = [
            [
                j,
                name,
                b,
                tc.layer_eps,
                matched.get("beta0_layers", [None] * len(names))[j],
                matched.get("layer_eps"),
                len(idx),
            ]
            for j, (name, b) in enumerate(zip(names, layer_beta0, strict=True))
        ]
        metrics["topology/layers_time_s"] = time.perf_counter() - t0
        write_csv(
            run_dir / "topology_layers.csv",
            ["layer_index", "layer", "beta0", "eps", "beta0_matched", "eps_matched", "n_points"],
            rows,
        )

    # 2. beta_0 of the KAE's decoded steps (Figure 3 top right) and their PCs (Figure 3 bottom)
    step_beta0: list[int] = []
    fig_panels_steps: dict[str, torch.Tensor] = {}
    if tc.steps and art is not None:
        t0 = time.perf_counter()
        decoded = kae_trajectory(art.kae, art.prep.transform_source(reps[src][idx]))
        fig_decoded = kae_trajectory(art.kae, art.prep.transform_source(reps[src][fig_idx]))
        step_eps = [tc.step_eps] + ([tc.step_eps * matched["scale"]] if "scale" in matched else [])
        step_matched: list[int] = []
        for t in range(decoded.shape[0]):
            values, _ = beta0_values(decoded[t], step_eps, tc.backend)
            step_beta0.append(values[0])
            step_matched += values[1:]
        del decoded
        if step_matched:
            matched.update({"step_eps": step_eps[1], "beta0_steps": step_matched})
            metrics["topology/matched/step_eps"] = step_eps[1]
            metrics["topology/matched/beta0_steps"] = step_matched
        k = len(step_beta0) - 1
        for t in selected_steps(k, tc.figure_steps):
            fig_panels_steps[f"step {t}/{k}: beta_0={step_beta0[t]}"] = fig_decoded[t]
        metrics["topology/beta0_steps"] = step_beta0
        metrics["topology/beta0_step_first"] = step_beta0[0]
        metrics["topology/beta0_step_last"] = step_beta0[-1]
        metrics["topology/beta0_steps_nonincreasing"] = bool(
            all(a >= b for a, b in zip(step_beta0[:-1], step_beta0[1:], strict=True))
        )
        metrics["topology/steps_time_s"] = time.perf_counter() - t0
        write_csv(
            run_dir / "topology_steps.csv",
            ["step", "beta0", "eps", "beta0_matched", "eps_matched", "n_points"],
            [
                [t, b, tc.step_eps, step_matched[t] if step_matched else None, matched.get("step_eps"), len(idx)]
                for t, b in enumerate(step_beta0)
            ],
        )
        log.info("KAE steps: beta_0(%.4g) = %s", tc.step_eps, step_beta0)

    # 3. Betti curves of x_j in the original and the observable space (Figure 2B)
    curve_clouds: dict[str, torch.Tensor] = {}
    if tc.curves:
        t0 = time.perf_counter()
        if art is not None:
            original = art.prep.transform_target(reps[tgt][curve_idx])
            with torch.no_grad():
                art.kae.eval()
                observable = art.kae.encoder(original)
            curve_clouds = {"original": original, "observable": observable}
        else:
            prep = layer_preprocessor(data.reps["train"][tgt], q, scale)
            curve_clouds = {"original": prep.transform(reps[tgt][curve_idx])}
        eps_max = tc.eps_max
        if eps_max is None:
            eps_max = 1.1 * float(B.mst_edges(curve_clouds["original"])[1].max(initial=0.0))
            eps_max = max(eps_max, tc.eps_min + 1e-12)
        grid = B.eps_grid(tc.eps_min, eps_max, tc.eps_num)
        diagrams = {
            space: B.persistence_diagrams(cloud, tc.maxdim, eps_max, tc.backend, tc.collapse_edges, tc.h1_backend)
            for space, cloud in curve_clouds.items()
        }
        curves = {space: {k: B.betti_from_bars(d, grid) for k, d in enumerate(dg)} for space, dg in diagrams.items()}
        metrics["topology/curves/eps_max"] = eps_max
        metrics["topology/curves/n_points"] = len(curve_idx)
        for space, c in curves.items():
            for k, v in c.items():
                metrics[f"topology/curves/{space}/beta{k}_max"] = int(v.max())
        if "observable" in curves:
            total = 0.0
            for k in range(tc.maxdim + 1):
                dist = B.curve_distance(curves["original"][k], curves["observable"][k], grid)
                bott = B.bottleneck(
                    B.truncate_diagram(diagrams["original"][k], eps_max),
                    B.truncate_diagram(diagrams["observable"][k], eps_max),
                )
                metrics[f"topology/curves/distance_h{k}"] = dist
                metrics[f"topology/curves/bottleneck_h{k}"] = bott
                total += dist
            metrics["topology/curves/distance"] = total
        header = ["eps"] + [f"{s}_beta{k}" for s in curves for k in range(tc.maxdim + 1)]
        cols = [grid] + [curves[s][k] for s in curves for k in range(tc.maxdim + 1)]
        write_csv(
            run_dir / "topology_curves.csv", header, [list(r) for r in zip(*[c.tolist() for c in cols], strict=True)]
        )
        write_csv(
            run_dir / "topology_diagrams.csv",
            ["space", "dim", "birth", "death"],
            [[s, k, b, d] for s, dg in diagrams.items() for k, bars in enumerate(dg) for b, d in bars.tolist()],
        )
        metrics["topology/curves_time_s"] = time.perf_counter() - t0

    # 4. figures
    if tc.figures:
        from kaelab.viz.topology import plot_beta0_depth, plot_betti_curves, plot_pca_panels

        fig_labels = labels[fig_idx].numpy()
        pts = f"{len(fig_idx)} {tc.split} points"
        if fig_panels_layers:
            images["topology/layers_pca"] = plot_pca_panels(
                fig_panels_layers,
                fig_labels,
                run_dir / "topology_layers_pca.png",
                f"{cfg.name}: top-3 PCs of each layer's preprocessed representation "
                f"({pts}; beta_0 at eps={tc.layer_eps})",
            )
        if fig_panels_steps:
            images["topology/kae_steps_pca"] = plot_pca_panels(
                fig_panels_steps,
                fig_labels,
                run_dir / "topology_kae_steps_pca.png",
                f"{cfg.name}: top-3 PCs of the KAE's decoded steps ({pts}; beta_0 at eps={tc.step_eps})",
            )
        if layer_beta0 or step_beta0:
            layer_ref: dict[str, list[float]] = {}
            step_ref: dict[str, list[float]] = {}
            if tc.reference_layers:
                layer_ref["published (topology.reference_layers)"] = list(tc.reference_layers)
            if "beta0_layers" in matched:
                layer_ref[f"kaelab at eps={matched['layer_eps']:.3g} (L0 matched)"] = matched["beta0_layers"]
            if "beta0_steps" in matched:
                step_ref[f"at eps={matched['step_eps']:.3g} (same scale factor)"] = matched["beta0_steps"]
            images["topology/beta0_depth"] = plot_beta0_depth(
                run_dir / "topology_beta0.png",
                names if layer_beta0 else None,
                layer_beta0 or None,
                tc.layer_eps,
                step_beta0 or None,
                tc.step_eps,
                len(idx),
                layer_ref,
                step_ref,
            )
        if curve_clouds:
            styles = {"original": {"c": "k", "lw": 2.0}, "observable": {"c": "tab:red", "lw": 1.5, "ls": "--"}}
            images["topology/betti_curves"] = plot_betti_curves(
                grid,
                {f"{s} space" if s == "original" else "observable space (KAE encoder)": c for s, c in curves.items()},
                run_dir / "topology_betti_curves.png",
                f"{cfg.name}: Betti curves of x_j = {tgt} ({len(curve_idx)} {tc.split} points)",
                styles={"original space": styles["original"], "observable space (KAE encoder)": styles["observable"]},
            )
            if "observable" in curve_clouds:
                images["topology/observable_pca"] = plot_pca_panels(
                    {
                        f"x_j ({tgt}), preprocessed": curve_clouds["original"],
                        "x_j in observable space": curve_clouds["observable"],
                    },
                    labels[curve_idx].numpy(),
                    run_dir / "topology_observable_pca.png",
                    f"{cfg.name}: top-3 PCs of x_j in state and observable space ({len(curve_idx)} points)",
                )
        metrics["topology/figures"] = sorted(p.name for p in images.values())
    metrics["topology/time_s"] = time.perf_counter() - t_start

    loggers = build_loggers(cfg, run_dir / "topology", f"{cfg.name}-topology")
    log_metrics_to(loggers, metrics)
    if images:
        from kaelab.viz.dmd import log_images

        log_images(loggers, images)
    for lg in loggers:  # flush the images (TensorBoard writes them on its own schedule otherwise)
        lg.finalize("success")
    return metrics
