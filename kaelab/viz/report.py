"""Figures of the report pages (kaelab.report), returned as matplotlib figures (the page embeds
them; nothing is written into the run directory):

* the loss curves of a fit, per epoch, from the ``metrics.csv`` its CSV logger wrote;
* each key metric of a sweep against each swept value, mean with SD error bars over seeds.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def epoch_series(csv_path: Path) -> dict[str, list[tuple[int, float]]]:
    """Per column of a Lightning ``metrics.csv``: (epoch, value) pairs, the last value logged in
    each epoch (train and validation rows are separate rows of the file)."""
    per: dict[str, dict[int, float]] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                epoch = int(float(row.get("epoch") or ""))
            except ValueError:
                continue
            for key, text in row.items():
                if key in ("epoch", "step") or not text:
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                if math.isfinite(value):
                    per.setdefault(key, {})[epoch] = value
    return {k: sorted(v.items()) for k, v in per.items()}


def _plot_series(ax, series: dict[str, list[tuple[int, float]]], keys: list[str], ylabel: str, title: str) -> None:
    split_colors = {"train": "tab:blue", "val": "tab:orange"}
    by_split = len({k.split("/")[0] for k in keys}) == len(keys)  # train/x and val/x: one colour per split
    for key in keys:
        pts = series[key]
        style = "o-" if len(pts) < 12 else "-"
        color = split_colors.get(key.split("/")[0]) if by_split else None
        ax.plot([e for e, _ in pts], [v for _, v in pts], style, ms=3, lw=1.4, label=key, color=color)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    values = [v for key in keys for _, v in series[key]]
    if values and min(values) > 0 and max(values) / min(values) > 30:  # losses spanning decades
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


def loss_curve_figure(csv_path: Path, title: str):
    """Train and validation loss per epoch (left) and, when logged, accuracy or the validation loss
    terms (right); None when the file has no per-epoch loss."""
    series = epoch_series(csv_path)
    losses = [k for k in ("train/loss", "val/loss") if k in series]
    if not losses:
        return None
    accs = [k for k in ("train/acc", "val/acc") if k in series]
    terms = sorted(k for k in series if k.startswith("val/loss_"))
    second = accs or terms
    fig, axes = plt.subplots(1, 2 if second else 1, figsize=(11 if second else 6, 3.6), squeeze=False)
    _plot_series(axes[0][0], series, losses, "loss", "loss per epoch")
    if accs:
        _plot_series(axes[0][1], series, accs, "accuracy", "accuracy per epoch")
    elif terms:
        _plot_series(axes[0][1], series, terms, "loss term", "validation loss terms per epoch")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _as_numbers(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def _metric_axes(n: int, width: float = 4.2):
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.3 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def sweep_metric_figure(agg: dict[str, Any], key: str, metrics: list[str], scale_of) -> Any:
    """Each metric's mean (SD error bars, over the seeds of a row of ``kaelab.aggregate.aggregate``)
    against the swept ``key``; one line per value of the other swept keys. ``scale_of(metric)``:
    100 for accuracies (plotted in percent), else 1."""
    others = [k for k in agg["group_keys"] if k != key]
    fig, axes = _metric_axes(len(metrics))
    for ax, m in zip(axes, metrics, strict=True):
        lines: dict[str, list[tuple[str, float, float]]] = {}
        for row in agg["rows"]:
            s = row["metrics"].get(m)
            if s:
                label = ", ".join(f"{k}={row['group'][k]}" for k in others) or m
                lines.setdefault(label, []).append((row["group"][key], s["mean"], s["sd"]))
        xs_all = sorted({x for pts in lines.values() for x, _, _ in pts}, key=lambda v: (_as_numbers([v]) is None, v))
        numeric = _as_numbers(xs_all) is not None
        position = {x: (float(x) if numeric else i) for i, x in enumerate(xs_all)}
        scale = scale_of(m)
        for label, pts in lines.items():
            pts.sort(key=lambda p: position[p[0]])
            xs = [position[x] for x, _, _ in pts]
            ax.errorbar(xs, [mu * scale for _, mu, _ in pts], yerr=[sd * scale for _, _, sd in pts],
                        fmt="o-", ms=4, capsize=3, label=label)  # fmt: skip
        if not numeric:
            ax.set_xticks(list(position.values()), xs_all, fontsize=8)
        ax.set(xlabel=key, ylabel=f"{m} (%)" if scale == 100 else m, title=m)
        ax.grid(alpha=0.3)
        if others:
            ax.legend(fontsize=7)
    fig.suptitle(f"key metrics against {key}: mean, error bars 1 SD over {agg['seed_key']}", fontsize=11)
    fig.tight_layout()
    return fig


def seed_metric_figure(points: dict[str, list[tuple[str, float]]], seed_key: str, scale_of) -> Any:
    """A sweep over seeds alone: each metric per job against the seed, with its mean (line) and
    +-1 SD (band). ``points``: metric -> [(seed, value)]."""
    import statistics

    fig, axes = _metric_axes(len(points))
    for ax, (m, pts) in zip(axes, points.items(), strict=True):
        scale = scale_of(m)
        xs = [p[0] for p in pts]
        numbers = _as_numbers(xs)
        pos = numbers if numbers is not None else list(range(len(xs)))
        ys = [v * scale for _, v in pts]
        ax.plot(pos, ys, "o", ms=5, label="job")
        mean = statistics.fmean(ys)
        sd = statistics.stdev(ys) if len(ys) > 1 else 0.0
        ax.axhline(mean, color="k", lw=1, label=f"mean {mean:.4g} (SD {sd:.2g})")
        ax.axhspan(mean - sd, mean + sd, color="k", alpha=0.08)
        if numbers is None or all(v.is_integer() for v in numbers):  # seeds: one tick per job
            ax.set_xticks(pos, xs, fontsize=8)
        ax.set(xlabel=seed_key, ylabel=f"{m} (%)" if scale == 100 else m, title=m)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"key metrics per job against {seed_key}: mean (line) and +-1 SD (band)", fontsize=11)
    fig.tight_layout()
    return fig
