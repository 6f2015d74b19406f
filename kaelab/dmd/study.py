"""One DMD layer-replacement study: trajectories -> DMD fits over (h, rank, span) -> hybrid accuracies.

Used by the ``DMDReplacement`` callback (kaelab/dmd/callback.py), which adds figures and logging.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from kaelab.dmd.config import valid_rank
from kaelab.dmd.delay import check_delay, pad_states, paired_snapshots
from kaelab.dmd.hybrid import HybridNet, resolve_span
from kaelab.dmd.layer_scaling import check_scaling
from kaelab.dmd.operator import DMDFit, fit_delay_dmd, resolve_rank, singular_values
from kaelab.dmd.rollout import rollout_name
from kaelab.metrics import accuracy_report
from kaelab.models.positions import bits_per_token, draw_positions, flatten_tokens, states_at
from kaelab.models.trajectory import Trajectory

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}  # dmd.dtype (DTYPE_NAMES in dmd/config.py)


def dmd_n_states(n_net_states: int, cfg: Any) -> int:
    """Number of states T + 1 the DMD sees: the network's trajectory states, or with layer scaling
    (``dmd.scaling.n_layers > 0``) the scaled module's input, the n new states and its output."""
    sc = cfg.scaling
    check_scaling(n_net_states, sc.layer, sc.n_layers)
    return sc.n_layers + 2 if sc.n_layers > 0 else n_net_states


@torch.no_grad()
def collect_states(traj: Trajectory, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Trajectories ``[N, T + 1, D]`` (zero-padded to the widest state) of inputs ``x``."""
    return torch.cat([pad_states(traj.states(xb), traj.state_dim) for xb in x.split(batch_size)])


def fit_states(traj: Trajectory, x_train: torch.Tensor, cfg: Any, where: torch.Tensor | None = None) -> torch.Tensor:
    """Trajectories of the ``cfg.n_fit`` training samples (a random subset, seeded by ``cfg.fit_seed``;
    0: all) that the DMD is fitted on; with ``where`` (token positions, ``fit_positions``) the
    per-position trajectories ``[n, T + 1, d]`` at those rows."""
    if where is not None:
        return states_at(traj, x_train, where)
    n = len(x_train) if cfg.n_fit <= 0 else min(cfg.n_fit, len(x_train))
    idx = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(int(cfg.fit_seed)))[:n]
    return collect_states(traj, x_train[idx], cfg.eval_batch_size)


def fit_positions(y_train: torch.Tensor, cfg: Any, positions: dict[str, int]) -> torch.Tensor:
    """The (window, position) rows a position-wise DMD is fitted on: every stage's draw of
    ``model.positions`` on the training split (``draw_positions``: the same positions the KAE and
    topology see), restricted to ``cfg.n_fit`` windows (a random subset seeded by ``cfg.fit_seed``; 0: all)."""
    where = draw_positions(y_train, positions["per_window"], positions["seed"])
    n = len(y_train) if cfg.n_fit <= 0 else min(cfg.n_fit, len(y_train))
    windows = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(int(cfg.fit_seed)))[:n]
    return where[torch.isin(where[:, 0], windows)]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    return torch.cat([model(xb) for xb in x.split(batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> float:
    """Top-1 accuracy over samples (torchmetrics, as every stage reports it); for a sequence model's
    logits ``[B, T, V]``, over the positions with a target (next-token accuracy)."""
    logits, y = flatten_tokens(predict(model, x, batch_size), y)
    return multiclass_accuracy(logits, y, logits.shape[1], average="micro").item()


def bits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> float:
    """Mean cross-entropy in bits of a sequence model's next-token logits (bits per byte)."""
    return bits_per_token(predict(model, x, batch_size), y)


@torch.no_grad()
def state_rel_error(hybrid: HybridNet, x: torch.Tensor, batch_size: int = 4096) -> float:
    """Relative error ||s_b_pred - s_b|| / ||s_b|| of the operator's last state on inputs ``x``."""
    traj, num, den = hybrid.traj, 0.0, 0.0
    for xb in x.split(batch_size):
        true = traj.run(traj.prefix(xb), 0, hybrid.b)
        pred = hybrid.predicted_state(xb).to(true.dtype)
        num += (pred - true).pow(2).sum().item()
        den += true.pow(2).sum().item()
    return (num / max(den, 1e-30)) ** 0.5


@dataclass
class GridPoint:
    h: int
    rank: int
    span: tuple[int, int]


@dataclass
class PointResult:
    point: GridPoint
    fit: DMDFit
    hybrid: HybridNet
    row: dict[str, Any]


def grid_points(cfg: Any, n_states: int) -> tuple[GridPoint, list[GridPoint]]:
    """The main point (checked against the trajectory's ``n_states``: raises ConfigError) and the
    grid (invalid combinations dropped)."""
    span = resolve_span(cfg.span, n_states)
    check_delay(cfg.h, span[1] - span[0] + 1)
    main = GridPoint(int(cfg.h), int(cfg.rank), span)
    hs = list(cfg.grid.h) or [main.h]
    ranks = list(cfg.grid.rank) or [main.rank]
    spans = [resolve_span(s, n_states) for s in cfg.grid.span] or [main.span]
    points = [main]
    for h, r, s in itertools.product(hs, ranks, spans):
        p = GridPoint(int(h), int(r), s)
        if p not in points and 0 <= p.h <= s[1] - s[0] - 1 and valid_rank(p.rank):
            points.append(p)
    return main, points


def estimator_config(cfg: Any) -> dict | None:
    """``dmd.estimator`` as a plain dict (None: kaelab's projected DMD)."""
    est = cfg.get("estimator")
    if est is None:
        return None
    return OmegaConf.to_container(est, resolve=True) if isinstance(est, DictConfig) else dict(est)


def span_width(traj: Trajectory, span: tuple[int, int], positions: tuple[int, int] | None = None) -> int:
    """Width of the operator's states over ``span``: the widest state, or a position's ``dim``."""
    return max(traj.widths[span[0] : span[1] + 1]) if positions is None else positions[1]


def evaluate_point(
    traj: Trajectory,
    S_train: torch.Tensor,
    point: GridPoint,
    cfg: Any,
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    svals: np.ndarray | None = None,
    positions: tuple[int, int] | None = None,
) -> PointResult:
    """Fit the DMD of one (h, rank, span) on training trajectories and score its hybrid per split
    (``positions``: ``(tokens, dim)`` of a sequence model, whose hybrid applies the operator
    position-wise and is also scored in bits per token)."""
    a, b = point.span
    width = span_width(traj, point.span, positions)
    S = S_train[:, a : b + 1, :width]
    fit = fit_delay_dmd(S, point.h, point.rank, DTYPES[cfg.dtype], cfg.tikhonov, svals, estimator_config(cfg))
    hybrid = HybridNet(traj, fit.operator, point.span, cfg.rollout, positions).eval()
    row: dict[str, Any] = {
        "h": point.h,
        "rank": point.rank,
        "rank_used": fit.operator.rank,
        "span_start": a,
        "span_end": b,
        "span_transitions": b - a,
        "layers_replaced": hybrid.layers_replaced,
        "original_layers_replaced": hybrid.original_layers_replaced,
        "fit_time_s": round(fit.fit_time_s, 4),
        "spectral_radius": round(fit.operator.spectral_radius(), 5),
    }
    for split, (x, y) in splits.items():
        row[f"{split}_acc"] = accuracy(hybrid, x, y, cfg.eval_batch_size)
        if positions is not None:
            row[f"{split}_bpb"] = bits(hybrid, x, y, cfg.eval_batch_size)
    if "test" in splits:
        row["test_state_rel_err"] = state_rel_error(hybrid, splits["test"][0], cfg.eval_batch_size)
    log.info("dmd grid: %s", row)
    return PointResult(point, fit, hybrid, row)


def run_grid(
    traj: Trajectory,
    S_train: torch.Tensor,
    points: list[GridPoint],
    cfg: Any,
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    positions: tuple[int, int] | None = None,
) -> list[PointResult]:
    """``evaluate_point`` for every grid point; a point whose rank resolves to one already fitted for
    the same (h, span) (e.g. rank 64 and -1 when X has numerical rank 40) reuses that fit."""
    done: dict[tuple, PointResult] = {}
    svals: dict[tuple, np.ndarray] = {}
    results = []
    for p in points:
        a, b = p.span
        width = span_width(traj, p.span, positions)
        if (p.h, p.span) not in svals:
            X, _ = paired_snapshots(S_train[:, a : b + 1, :width].double(), p.h)
            svals[p.h, p.span] = singular_values(X)
        key = (p.h, p.span, resolve_rank(p.rank, svals[p.h, p.span]))
        if key in done:
            prev = done[key]
            results.append(PointResult(p, prev.fit, prev.hybrid, {**prev.row, "rank": p.rank}))
            continue
        done[key] = evaluate_point(traj, S_train, p, cfg, splits, svals[p.h, p.span], positions)
        results.append(done[key])
    return results


def select_result(results: list[PointResult], main: GridPoint, select: str) -> PointResult:
    """The reported point: the configured one, or the best by validation accuracy (ties: more layers
    carried, then smaller rank) - never chosen by test accuracy."""
    if select == "none":
        return next(r for r in results if r.point == main)
    return max(results, key=lambda r: (r.row["val_acc"], r.row["layers_replaced"], -r.row["rank_used"]))


def study_metrics(
    net: nn.Module, best: PointResult, results: list[PointResult], cfg: Any, n_states: int, splits: dict
) -> dict[str, Any]:
    """The ``dmd/*`` metrics of the reported point ``best``: the base network's and the hybrid's test
    accuracy, the layers the operator carries of the span, the fit and the settings behind it."""
    y_tr, (x_te, y_te) = splits["train"][1], splits["test"]
    num_classes = int(max(y_te.max().item(), y_tr.max().item())) + 1
    logits, targets = flatten_tokens(predict(best.hybrid, x_te, cfg.eval_batch_size), y_te)
    num_classes = max(num_classes, logits.shape[1])
    report = accuracy_report(logits.argmax(1), targets, num_classes, prefix="dmd/test_")
    row = best.row
    metrics = {
        "dmd/base_test_acc": accuracy(net, x_te, y_te, cfg.eval_batch_size),
        "dmd/test_acc": report["dmd/test_acc"],
        "dmd/test_acc_macro": report["dmd/test_acc_macro"],
        "dmd/layers_replaced": row["layers_replaced"],
        "dmd/original_layers_replaced": row["original_layers_replaced"],
        "dmd/span_transitions": row["span_transitions"],
        "dmd/carried_fraction": row["layers_replaced"] / row["span_transitions"],
        "dmd/span_start": row["span_start"],
        "dmd/span_end": row["span_end"],
        "dmd/n_states": n_states,
        "dmd/h": row["h"],
        "dmd/rank": row["rank_used"],
        "dmd/rank_requested": row["rank"],
        "dmd/fit_time_s": best.fit.fit_time_s,
        "dmd/n_fit_pairs": best.fit.n_pairs,
        "dmd/spectral_radius": row["spectral_radius"],
        "dmd/test_state_rel_err": row["test_state_rel_err"],
        "dmd/rollout": rollout_name(cfg.rollout),
        "dmd/estimator": (cfg.estimator or {}).get("_target_", "kaelab projected DMD"),
        "dmd/grid_points": len(results),
    }
    if "val_acc" in row:
        metrics["dmd/val_acc"] = row["val_acc"]
    if cfg.scaling.n_layers > 0:
        metrics["dmd/scaled_test_acc"] = accuracy(best.hybrid.traj, x_te, y_te, cfg.eval_batch_size)
        # the scaled layer itself is the last transition: does the operator carry it?
        metrics["dmd/carries_original_layer"] = int(row["span_end"] == n_states - 1)
    return metrics


def position_metrics(
    net: nn.Module, best: PointResult, results: list[PointResult], cfg: Any, test, names: list[str], base_acc: float
) -> dict[str, Any]:
    """A sequence model's report (states read at token positions, the operator applied to each
    position): bits per token of the base network and of the reported hybrid on the test windows,
    and, for every grid point that replaces a single block (a span of one transition, h = 0, at the
    reported rank setting), what replacing that block costs: ``dmd/block/<state it produces>/*``,
    the hybrid's next-token accuracy and bits, and their changes from the base network's."""
    x_te, y_te = test
    base_bpb = bits(net, x_te, y_te, cfg.eval_batch_size)
    m: dict[str, Any] = {"dmd/base_test_bpb": base_bpb, "dmd/test_bpb": best.row["test_bpb"]}
    blocks = []
    for r in results:
        row = r.row
        if row["span_transitions"] != 1 or row["h"] != 0 or row["rank"] != best.point.rank:
            continue
        name = names[row["span_end"]]
        blocks.append(name)
        m[f"dmd/block/{name}/test_acc"] = row["test_acc"]
        m[f"dmd/block/{name}/test_bpb"] = row["test_bpb"]
        m[f"dmd/block/{name}/acc_cost"] = base_acc - row["test_acc"]
        m[f"dmd/block/{name}/bpb_cost"] = row["test_bpb"] - base_bpb
    if blocks:
        m["dmd/blocks_replaced_alone"] = blocks
        log.info("DMD per block (next-token bits added): %s",
                 {b: round(m[f"dmd/block/{b}/bpb_cost"], 4) for b in blocks})  # fmt: skip
    return m
