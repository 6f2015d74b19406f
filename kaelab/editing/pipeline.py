"""``task=edit``: unlearn classes by editing the cached KAE's operator (KAE paper, Sec. 4.3, App. D),
evaluated on the held-out test split, optionally against a base model retrained without them.

base model, representations, KAE  (cached, kaelab.koopman.pipeline.trained_kae)
   -> the edit strategy on the training split (edit.strategy, kaelab.editing.strategies; by
      default Algorithm 1, kaelab.editing.unlearning, with the target rule edit.targets) -> K'
   -> test x_i -> preprocess -> phi -> K' -> phi^-1 -> inverse preprocess -> base model's head
The cached KAE is only read; metrics.json is written first, then the edited operator
(edit/operator.safetensors) and the figure into the run dir: one that cannot be written (a full disk)
is a warning and ``edit/artifact_errors``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from safetensors.torch import load_file, save_file
from torchmetrics.functional.classification import multiclass_accuracy

from kaelab.base_model import base_model
from kaelab.cache import ArtifactCache, config_key
from kaelab.data import build_datamodule
from kaelab.editing.config import (
    build_edit_strategy,
    check_forget_range,
    forget_classes,
    redirect_class,
    retrain_exclusion_key,
    variant_name,
)
from kaelab.editing.statistics import KeyStatistics, key_statistics
from kaelab.editing.strategies import STRATEGIES
from kaelab.editing.targets import TARGET_RULES
from kaelab.editing.unlearning import OperatorEdit
from kaelab.errors import ConfigError
from kaelab.fileio import atomic_write_text, optional_output
from kaelab.koopman.pipeline import KAEArtifact, kae_layers, trained_kae
from kaelab.koopman.surrogate import predict_target
from kaelab.metrics import write_metrics
from kaelab.models.positions import positions_metrics, sample_logits
from kaelab.training import build_loggers, log_metrics_to

log = logging.getLogger(__name__)


def check_training_classes(cfg: DictConfig, forget: list[int]) -> None:
    """Every forgotten class must be one of the data's classes and have training samples (e.g. not
    removed by data.exclude_classes; for a sequence model: occur as a training target)."""
    dm = build_datamodule(cfg.data)
    dm.prepare_data()
    dm.setup()
    check_forget_range(forget, dm.num_classes)
    present = set(torch.unique(dm.tensors("train")[1]).tolist())
    missing = [c for c in forget if c not in present]
    if missing:
        raise ConfigError(f"edit.target_class={missing[0]} has no training samples to find its keys from")
    dest = redirect_class(cfg.edit)
    if dest is not None and dest not in present:
        raise ConfigError(f"edit.redirect_to={dest} has no training samples")


@torch.no_grad()
def surrogate_predictions(traj, target_layer: str, art: KAEArtifact, x_i: torch.Tensor, K: torch.Tensor):
    """The surrogate's class predictions with operator ``K``; ``traj``: the base model's readout
    (its Trajectory, or the PositionView of a sequence model read at token positions)."""
    x_j_hat = predict_target(art.kae, art.prep, x_i, K=K)
    return traj.forward_from(target_layer, x_j_hat).argmax(1)


def class_accuracies(pred: torch.Tensor, labels: torch.Tensor, num_classes: int, forget: list[int]) -> dict[str, Any]:
    """Per-class accuracy, and accuracy (over samples) on the forgotten and on the retained classes."""
    present = torch.bincount(labels, minlength=num_classes) > 0
    per_class = multiclass_accuracy(pred, labels, num_classes, average="none")
    per_class = torch.where(present, per_class, torch.nan).tolist()  # a class with no samples: NaN, not 0
    fmask = torch.isin(labels, torch.tensor(forget, dtype=labels.dtype))

    def acc(mask: torch.Tensor) -> float:
        return multiclass_accuracy(pred[mask], labels[mask], num_classes, average="micro").item()

    forgotten = torch.isin(pred[fmask], torch.tensor(forget, dtype=pred.dtype))
    return {
        "acc_per_class": per_class,
        "forget_acc": acc(fmask),
        "retain_acc": acc(~fmask),
        "acc": multiclass_accuracy(pred, labels, num_classes, average="micro").item(),
        # of the forgotten classes' samples, predicted as any forgotten class (as forget_acc for one class)
        "forget_set_rate": forgotten.double().mean().item() if len(forgotten) else float("nan"),
    }


def retrain_without(cfg: DictConfig, forget: list[int], run_dir: Path):
    """The base model trained by the same recipe on the data without ``forget`` (cached)."""
    rcfg = cfg.copy()
    with open_dict(rcfg):
        if retrain_exclusion_key(cfg) == "exclude_targets":  # a sequence model: those next tokens ignored
            rcfg.data.exclude_targets = sorted(set(list(cfg.data.get("exclude_targets") or []) + forget))
        else:
            rcfg.data.exclude_classes = sorted(set(list(cfg.data.get("exclude_classes") or []) + forget))
    return base_model(rcfg, run_dir / "retrain")


def edit_task(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Edit the cached KAE's operator with the ``edit`` group's strategy on the TRAINING split's
    pairs, and report the surrogate before / after it on the TEST split."""
    ec = cfg.edit
    forget = forget_classes(ec.target_class)  # the group was checked before (check_edit_config)
    layers = kae_layers(cfg)
    strategy = build_edit_strategy(ec)
    check_training_classes(cfg, forget)
    base, data, art = trained_kae(cfg, run_dir, layers=layers)
    train, labels = data.reps["train"], data.labels["train"]
    x_i, x_j = art.prep.transform_source(train[art.source]), art.prep.transform_target(train[art.target])
    cache = StageCache(cfg, art, x_i, x_j, labels, data.num_classes)
    edit = strategy.edit(art.kae, x_i, x_j, labels, forget, data.num_classes, cache)

    m: dict[str, Any] = {"edit/target_class": forget, "edit/targets": variant_name(ec.targets, TARGET_RULES)}
    m.update({"edit/keys_from": ec.keys_from, "edit/strategy": variant_name(ec.strategy, STRATEGIES), **cache.metrics})
    m.update({**edit.metrics, "kae/key": art.key, "kae/cache_hit": art.cache_hit, "base/cache_hit": base.cache_hit})
    m.update(positions_metrics(data.positions, data.where))
    after, test_metrics = evaluate_on_test(base, data, art, edit, forget)
    m.update({**test_metrics, **operator_metrics(edit)})
    if ec.compare_retrain:
        m.update(retrain_comparison(cfg, forget, run_dir, data, after, edit.time_s))
    write_metrics(run_dir / "metrics.json", m)  # first: an output below that fails loses no result
    out = run_dir / "edit"
    optional_output(m, "edit", f"{out}/operator.safetensors", lambda: save_edit(out, art, forget, ec, edit))
    if ec.figure:
        names = getattr(base.datamodule, "class_names", None)
        fig = optional_output(
            m, "edit", str(out / "observable_pcs.png"),
            lambda: figure(cfg, art, data, edit, forget, out, names, strategy.label),
        )  # fmt: skip
        m.update({"edit/figure": str(fig)} if fig is not None else {})
    optional_output(m, "edit", "the run's loggers", lambda: log_edit(cfg, run_dir, m))
    log.info(
        "forget %s: forget acc %.4f -> %.4f, retain acc %.4f -> %.4f, edit %.2f s",
        forget, m["edit/forget_acc_before"], m["edit/forget_acc_after"],
        m["edit/retain_acc_before"], m["edit/retain_acc_after"], edit.time_s,
    )  # fmt: skip
    return m


def log_edit(cfg: DictConfig, run_dir: Path, m: dict[str, Any]) -> None:
    """The metrics and the figure to the run's loggers."""
    loggers = build_loggers(cfg.logger, run_dir, cfg.name)
    if m.get("edit/figure"):
        from kaelab.viz.log import log_images

        log_images(loggers, {"edit/observable_pcs": Path(m["edit/figure"])})
    log_metrics_to(loggers, m)


def evaluate_on_test(base, data, art: KAEArtifact, edit: OperatorEdit, forget: list[int]):
    """The base model's and the surrogate's (with K before / after the edit) accuracies on the TEST
    split; returns the edited surrogate's predictions and the metrics."""
    labels, n_cls = data.labels["test"], data.num_classes
    x_i = data.reps["test"][art.source]
    before = surrogate_predictions(base.readout, art.target, art, x_i, edit.K_before)
    after = surrogate_predictions(base.readout, art.target, art, x_i, edit.K_after)
    with torch.no_grad():
        base_pred = sample_logits(base.readout, data.inputs["test"], data.where.get("test")).argmax(1)
    m = {f"base/{k}": v for k, v in class_accuracies(base_pred, labels, n_cls, forget).items()}
    for tag, pred in (("before", before), ("after", after)):
        m.update({f"edit/{k}_{tag}": v for k, v in class_accuracies(pred, labels, n_cls, forget).items()})
    fmask = torch.isin(labels, torch.tensor(forget))
    m["edit/forget_predicted_as"] = torch.bincount(after[fmask], minlength=n_cls).tolist()
    m["edit/retain_changed"] = (after[~fmask] != before[~fmask]).double().mean().item()
    return after, m


def operator_metrics(edit: OperatorEdit) -> dict[str, Any]:
    """How the operator changed and how the edit was solved."""
    info, K0, K1 = edit.info, edit.K_before, edit.K_after
    return {
        "edit/spectral_radius_before": torch.linalg.eigvals(K0).abs().max().item(),
        "edit/spectral_radius_after": torch.linalg.eigvals(K1).abs().max().item(),
        "edit/time_s": edit.time_s,
        "edit/solve_time_s": edit.solve_time_s,
        "edit/exclusive_energy": edit.exclusive_energy,
        "edit/n_edit_keys": info.n_edit,
        "edit/n_preserved_keys": info.n_preserve,
        "edit/form": info.form,
        "edit/solver": info.solver,
        "edit/cond": info.cond,
        "edit/fallback": info.fallback_reason or "",
        "edit/delta_rel_norm": (torch.linalg.matrix_norm(K1 - K0) / torch.linalg.matrix_norm(K0)).item(),
    }


def save_edit(out: Path, art: KAEArtifact, forget: list[int], ec: DictConfig, edit: OperatorEdit) -> Path:
    """The operator before / after (edit/operator.safetensors) and what was edited (edit/edit.json)."""
    out.mkdir(parents=True, exist_ok=True)
    operators = {"K_before": edit.K_before.contiguous(), "K_after": edit.K_after.contiguous()}
    save_file(operators, str(out / "operator.safetensors"))
    config = OmegaConf.to_container(ec, resolve=True)
    record = {"kae_key": art.key, "kae_content": art.content_hash, "forget": forget, "config": config}
    atomic_write_text(out / "edit.json", json.dumps(record, indent=2))
    return out


class StageCache:
    """The per-KAE artifacts a strategy asks for (kaelab.editing.strategies.KAECache), from the
    artifact cache; their cache hits and load or build times go to ``metrics``."""

    def __init__(self, cfg: DictConfig, art: KAEArtifact, x_i, x_j, labels, num_classes: int):
        self.cfg, self.art, self.pairs, self.num_classes = cfg, art, (x_i, x_j, labels), num_classes
        self.metrics: dict[str, Any] = {}

    def key_statistics(self) -> KeyStatistics:
        stats, hit, seconds = cached_key_statistics(self.cfg, self.art, *self.pairs, self.num_classes)
        self.metrics.update({"edit/stats_cache_hit": hit, "edit/stats_time_s": seconds})
        return stats

    def spectrum(self):
        from kaelab.koopman.spectrum_pipeline import cached_spectrum

        t0 = time.perf_counter()
        spec, hit = cached_spectrum(self.cfg, self.art)
        seconds = time.perf_counter() - t0
        self.metrics["edit/spectral_decomposition_cache_hit"] = hit
        self.metrics["edit/spectral_decomposition_time_s"] = seconds
        return spec


def cached_key_statistics(cfg: DictConfig, art: KAEArtifact, x_i, x_j, labels, n_cls: int):
    """The KAE's per-class key statistics (kaelab.editing.statistics) over its training pairs,
    computed once per KAE (its key and the content hash of its entry) and cached: every later edit
    of this KAE, whatever it forgets, encodes only the forgotten samples. Returns (statistics, cache
    hit, seconds to load or build)."""
    t0 = time.perf_counter()
    built = False

    def build(tmp: Path) -> None:
        nonlocal built
        built = True
        save_file(key_statistics(art.kae, x_i, x_j, labels, n_cls).state_dict(), str(tmp / "statistics.safetensors"))

    def load(path: Path) -> KeyStatistics:
        stats = KeyStatistics.from_state_dict(load_file(str(path / "statistics.safetensors")))
        if stats.num_classes != n_cls or int(stats.count.sum()) != len(labels):
            raise ValueError(f"statistics of {int(stats.count.sum())} samples, {len(labels)} expected")
        return stats

    key = config_key("edit_stats", art.key, art.content_hash)  # follows a KAE rebuilt under its key
    manifest = {"kae": art.key, "kae_content": art.content_hash}
    stats = ArtifactCache(cfg.paths.cache_dir).load("edit_stats", key, build, load, manifest)
    return stats, not built, time.perf_counter() - t0


def retrain_comparison(cfg, forget, run_dir, data, edited_pred, edit_time_s) -> dict[str, Any]:
    """The unlearning literature's gold standard: the base model retrained without the classes."""
    t0 = time.perf_counter()
    rb = retrain_without(cfg, forget, run_dir)
    labels = data.labels["test"]
    with torch.no_grad():
        rpred = sample_logits(rb.readout, data.inputs["test"], data.where.get("test")).argmax(1)
    acc = class_accuracies(rpred, labels, data.num_classes, forget)
    fmask = torch.isin(labels, torch.tensor(forget))
    retrain_time = rb.metrics.get("train/time_s", time.perf_counter() - t0)
    return {
        **{f"retrain/{k}": v for k, v in acc.items()},
        "retrain/key": rb.key,
        "retrain/cache_hit": rb.cache_hit,
        "retrain/time_s": retrain_time,
        "edit/agreement_retrain_retained": (edited_pred[~fmask] == rpred[~fmask]).double().mean().item(),
        "edit/agreement_retrain_forgotten": (edited_pred[fmask] == rpred[fmask]).double().mean().item(),
        "edit/retrain_time_ratio": retrain_time / max(edit_time_s, 1e-9),
    }


def figure(cfg, art: KAEArtifact, data, edit, forget: list[int], out: Path, class_names=None, how="") -> Path:
    """Figure 4: observable-space outputs of test samples before / after the edit."""
    from kaelab.editing.unlearning import encode
    from kaelab.viz.editing import plot_edit_pcs

    n = cfg.edit.figure_points
    x_i = data.reps["test"][art.source][:n]
    z = encode(art.kae, art.prep.transform_source(x_i)).double()
    before, after = z @ edit.K_before.T, z @ edit.K_after.T
    names = ", ".join(str(c) for c in forget)
    title = f"{cfg.name}: operator edited to forget class {names} ({how})"
    labels = data.labels["test"][:n]
    return plot_edit_pcs(before, after, labels, forget, out / "observable_pcs.png", title, class_names)
