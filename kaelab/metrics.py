"""Accuracy metrics (micro / macro / per-class) and the run's flat ``metrics.json``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.classification import multiclass_accuracy

from kaelab.fileio import atomic_write_text


def last_train_batch(trainer: Any, batch_idx: int) -> bool:
    """Whether ``batch_idx`` is the training epoch's last batch (or the fit stops after it): where a
    module logs the values it accumulated over the epoch. True without a trainer."""
    if trainer is None:
        return True
    return batch_idx + 1 >= trainer.num_training_batches or trainer.should_stop


class EpochMeans:
    """Batch-size-weighted means over an epoch of detached step values, for ``self.log`` once per
    epoch instead of once per step and value. Lightning's per-call bookkeeping of
    ``self.log(on_epoch=True)`` costs the Yin-Yang KAE (7 values a step) more than its own step;
    the means are the ones Lightning would report (each batch weighted by its size)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, values: dict[str, torch.Tensor], n: int) -> None:
        for k, v in values.items():
            v = v.detach() * n
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += n

    def pop(self) -> dict[str, torch.Tensor]:
        """The means since the last ``pop`` (empty if nothing was added), and a fresh start."""
        means = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
        self.sums, self.count = {}, 0
        return means


def accuracy_report(preds: torch.Tensor, target: torch.Tensor, num_classes: int, prefix: str) -> dict:
    """``{prefix}acc`` (top-1 over samples), ``{prefix}acc_macro`` (mean per-class) and per class."""
    kw = dict(num_classes=num_classes, top_k=1)
    return {
        f"{prefix}acc": multiclass_accuracy(preds, target, average="micro", **kw).item(),
        f"{prefix}acc_macro": multiclass_accuracy(preds, target, average="macro", **kw).item(),
        f"{prefix}acc_per_class": multiclass_accuracy(preds, target, average="none", **kw).tolist(),
    }


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def write_metrics(path: str | os.PathLike, metrics: dict[str, Any]) -> Path:
    """Write one flat JSON object atomically (a killed job never leaves a truncated file)."""
    return atomic_write_text(path, json.dumps({k: _plain(v) for k, v in metrics.items()}, indent=2, sort_keys=True))


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric scalar entries of a metrics dict (what loggers can take)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# (stage, its key metrics, its time) for the end-of-run summary; stages a run did not have are skipped
SUMMARY_STAGES = (
    ("base model", ("test/acc", "test/acc_macro", "val/acc"), "train/time_s"),
    ("base model", ("base/test_acc", "base/test_acc_macro", "base/test_bpb"), None),
    (
        "KAE surrogate",
        ("kae/test_acc", "kae/test_acc_macro", "kae/test_bpb", "kae/agreement", "kae/state_fvu"),
        "kae/train_time_s",
    ),
    ("KAE path", ("path/fvu_mean", "path/fvu_line_mean", "path/cka_mean"), None),
    (
        "spectrum",
        ("spectrum/radius_K", "spectrum/radius_A", "spectrum/cond_V", "spectrum/effective_rank"),
        "spectrum/time_s",
    ),
    (
        "DMD hybrid",
        ("dmd/base_test_acc", "dmd/test_acc", "dmd/base_test_bpb", "dmd/test_bpb", "dmd/layers_replaced"),
        "dmd/fit_time_s",
    ),
)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes}m{sec:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _short(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _pct(value: Any) -> str:
    return f"{100 * float(value):.2f}%"


def headline(metrics: dict[str, Any]) -> str | None:
    """The run's headline result in one line: an edit's forget and retain accuracy before -> after,
    the DMD hybrid's and the KAE surrogate's accuracy against the base model's, beta_0 per layer,
    the operator's spectral radius, a trained model's test accuracy; None for other runs."""
    m = metrics
    has = lambda *keys: all(k in m for k in keys)
    if has("edit/forget_acc_before", "edit/forget_acc_after", "edit/retain_acc_before", "edit/retain_acc_after"):
        forget = m.get("edit/target_class")
        forget = forget if isinstance(forget, list) else [] if forget is None else [forget]
        cls = f" (class{'es' if len(forget) > 1 else ''} {', '.join(str(c) for c in forget)})" if forget else ""
        return (
            f"forget acc {_pct(m['edit/forget_acc_before'])} -> {_pct(m['edit/forget_acc_after'])}, "
            f"retain acc {_pct(m['edit/retain_acc_before'])} -> {_pct(m['edit/retain_acc_after'])}{cls}"
        )
    if has("dmd/test_acc", "dmd/base_test_acc"):
        return f"DMD hybrid {_pct(m['dmd/test_acc'])} vs base {_pct(m['dmd/base_test_acc'])} (test acc)"
    if isinstance(m.get("topology/beta0_layers"), list):
        eps = f" (eps {m['topology/layer_eps']:g})" if isinstance(m.get("topology/layer_eps"), (int, float)) else ""
        return f"beta_0 per layer {', '.join(str(b) for b in m['topology/beta0_layers'])}{eps}"
    if "spectrum/radius_K" in m:
        of_a = f" (of A = exp(G/k): {m['spectrum/radius_A']:.4f})" if "spectrum/radius_A" in m else ""
        return f"spectral radius of K {m['spectrum/radius_K']:.4f}{of_a}"
    if has("kae/test_acc", "base/test_acc"):
        agree = f"; agreement {_pct(m['kae/agreement'])}" if "kae/agreement" in m else ""
        return f"KAE surrogate {_pct(m['kae/test_acc'])} vs base {_pct(m['base/test_acc'])} (test acc{agree})"
    if "test/acc" in m:
        val = f" (val {_pct(m['val/acc'])})" if "val/acc" in m else ""
        return f"test acc {_pct(m['test/acc'])}{val}"
    return None


def summary_table(cfg: Any, run_dir: Path, metrics: dict[str, Any], elapsed_s: float) -> str:
    """A short table for the end of a run: its headline result, each stage with its key metrics and
    time, then where the results, checkpoints, figures and the report page are."""
    rows: list[tuple[str, str, str]] = []
    shown: set[str] = set()
    for stage, keys, time_key in SUMMARY_STAGES:
        present = [k for k in keys if k in metrics]
        if not present:
            continue
        shown.update(present)
        text = "  ".join(f"{k} {_short(metrics[k])}" for k in present)
        prefix = present[0].split("/", 1)[0]
        if metrics.get(f"{prefix}/cache_hit") is True:
            text += "  (from the cache)"
        took = _duration(float(metrics[time_key])) if time_key and time_key in metrics else "-"
        rows.append((stage, text, took))
    covered = {k.split("/", 1)[0] for k in shown} | {"train", "val", "test", "base", "kae", "dmd"}
    for prefix in sorted({k.split("/", 1)[0] for k in metrics if "/" in k} - covered):  # other stages
        keys = [k for k in metrics if k.startswith(prefix + "/") and isinstance(metrics[k], float)][:4]
        if keys:
            rows.append((prefix, "  ".join(f"{k} {_short(metrics[k])}" for k in keys), "-"))
    run_dir = Path(run_dir)
    figures = sorted(run_dir.rglob("*.png"))
    ckpts = [p for p in (run_dir / "model.ckpt", run_dir / "checkpoints" / "last.ckpt") if p.exists()]
    where = [("results", str(run_dir / "metrics.json"))]
    if ckpts:
        where.append(("checkpoint", str(ckpts[0])))
    if figures:
        dirs = sorted({str(p.parent) for p in figures})
        where.append(("figures", f"{len(figures)} PNG in {', '.join(dirs)}"))
    if getattr(cfg, "paths", None) is not None:
        where.append(("cache", str(cfg.paths.cache_dir)))
    if (run_dir / "report.html").is_file():  # kaelab.report: the last line, what to open next
        where.append(("report", str(run_dir / "report.html")))
    top = headline(metrics)
    width = max([len(r[0]) for r in rows] + [len(w[0]) for w in where] + [8 if top else 5])
    lines = [f"summary of {cfg.name} (task={cfg.task}), {_duration(elapsed_s)} in all"]
    lines += [f"  {'headline':<{width}}  {top}"] if top else []
    lines += [f"  {stage:<{width}}  {text}   [{took}]" for stage, text, took in rows]
    lines += [f"  {name:<{width}}  {value}" for name, value in where]
    return "\n".join(lines)
