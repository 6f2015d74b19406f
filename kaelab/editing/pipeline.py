"""``task=edit``: unlearn classes by editing the cached KAE's operator (KAE paper, Sec. 4.3, App. D),
evaluated on the held-out test split, optionally against a base model retrained without them.

base model, representations, KAE  (cached, kaelab.koopman.pipeline.trained_kae)
   -> Algorithm 1 on the training split (kaelab.editing.unlearning) -> K'
   -> test x_i -> preprocess -> phi -> K' -> phi^-1 -> inverse preprocess -> base model's head
The cached KAE is only read; the edited operator is written to the run dir (edit/operator.safetensors).
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
from kaelab.editing.statistics import KeyStatistics, key_statistics
from kaelab.editing.targets import TARGET_STRATEGIES
from kaelab.editing.unlearning import KEY_SOURCES, unlearn_classes
from kaelab.errors import ConfigError, check_choice
from kaelab.koopman.pipeline import KAEArtifact, check_kae_config, trained_kae
from kaelab.koopman.surrogate import predict_target
from kaelab.training import build_loggers, log_metrics_to

log = logging.getLogger(__name__)

STRATEGIES = ("emmet", "spectral")


def forget_classes(cfg: DictConfig) -> list[int]:
    """``edit.target_class`` as a sorted list of class indices (an int or a list in config)."""
    tc = cfg.edit.target_class
    raw = list(tc) if OmegaConf.is_list(tc) or isinstance(tc, (list, tuple)) else [tc]
    if not raw:
        raise ConfigError("edit.target_class is an empty list: name at least one class to forget")
    out = []
    for c in raw:
        if isinstance(c, bool) or not isinstance(c, int):
            raise ConfigError(f"edit.target_class entries must be class indices (int), got {c!r}")
        out.append(c)
    return sorted(set(out))


def check_edit_config(cfg: DictConfig) -> list[int]:
    """Fail fast (before anything is trained or cached) on an invalid edit config."""
    ec = cfg.edit
    if ec is None:
        raise ConfigError("task=edit needs an edit config: add +edit=default, or use +experiment=yinyang_edit")
    check_choice(ec.strategy, STRATEGIES, "edit.strategy")
    check_choice(ec.targets, TARGET_STRATEGIES, "edit.targets")
    check_choice(ec.keys_from, KEY_SOURCES, "edit.keys_from")
    for key in ("mu", "lam"):
        if ec[key] < 0:
            raise ConfigError(f"edit.{key}={ec[key]} must be >= 0")
    if ec.get("spectral_ratio", 1.0) <= 0:
        raise ConfigError(f"edit.spectral_ratio={ec.spectral_ratio} must be > 0")
    if ec.get("spectral_scale", 0.0) < 0:
        raise ConfigError(f"edit.spectral_scale={ec.spectral_scale} must be >= 0")
    if ec.get("spectral_max_modes") is not None and ec.spectral_max_modes < 1:
        raise ConfigError(f"edit.spectral_max_modes={ec.spectral_max_modes} must be >= 1")
    if ec.form not in ("auto", "ExE", "pxp"):
        raise ConfigError(f"edit.form must be auto, ExE or pxp, got {ec.form!r}")
    if ec.figure_points < 1:
        raise ConfigError(f"edit.figure_points={ec.figure_points} must be >= 1")
    forget = forget_classes(cfg)
    n_classes = int(cfg.model.net.out_dim)
    bad = [c for c in forget if not 0 <= c < n_classes]
    if bad:
        raise ConfigError(f"edit.target_class={bad[0]} is out of range: the model has classes 0..{n_classes - 1}")
    if len(forget) == n_classes:
        raise ConfigError(f"edit.target_class={forget} forgets every class: nothing would be retained")
    if ec.targets == "class_centroid":
        if ec.redirect_to is None:
            raise ConfigError("edit.targets=class_centroid needs edit.redirect_to=D (the class to merge into)")
        if not 0 <= ec.redirect_to < n_classes:
            raise ConfigError(f"edit.redirect_to={ec.redirect_to} is out of range: classes 0..{n_classes - 1}")
        if ec.redirect_to in forget:
            raise ConfigError(f"edit.redirect_to={ec.redirect_to} is one of the forgotten classes {forget}")
    if ec.compare_retrain and cfg.model.checkpoint:
        raise ConfigError("edit.compare_retrain needs the base model's training recipe, not model.checkpoint")
    return forget


def check_training_classes(cfg: DictConfig, forget: list[int]) -> None:
    """Every forgotten class must have training samples (e.g. not removed by data.exclude_classes)."""
    dm = build_datamodule(cfg.data)
    dm.prepare_data()
    dm.setup()
    present = set(torch.unique(dm.tensors("train")[1]).tolist())
    missing = [c for c in forget if c not in present]
    if missing:
        raise ConfigError(f"edit.target_class={missing[0]} has no training samples to find its keys from")
    if cfg.edit.targets == "class_centroid" and cfg.edit.redirect_to not in present:
        raise ConfigError(f"edit.redirect_to={cfg.edit.redirect_to} has no training samples")


@torch.no_grad()
def surrogate_predictions(traj, target_layer: str, art: KAEArtifact, x_i: torch.Tensor, K: torch.Tensor):
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

    return {
        "acc_per_class": per_class,
        "forget_acc": acc(fmask),
        "retain_acc": acc(~fmask),
        "acc": multiclass_accuracy(pred, labels, num_classes, average="micro").item(),
    }


def retrain_without(cfg: DictConfig, forget: list[int], run_dir: Path):
    """The base model trained by the same recipe on the data without ``forget`` (cached)."""
    rcfg = cfg.copy()
    with open_dict(rcfg):
        rcfg.data.exclude_classes = sorted(set(list(cfg.data.get("exclude_classes") or []) + forget))
    return base_model(rcfg, run_dir / "retrain")


def edit_task(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    ec = cfg.edit
    forget = check_edit_config(cfg)
    check_kae_config(cfg)
    check_training_classes(cfg, forget)
    base, data, art = trained_kae(cfg, run_dir)
    src, tgt, n_cls = art.source, art.target, data.num_classes
    train = data.reps["train"]
    x_i, x_j = art.prep.transform_source(train[src]), art.prep.transform_target(train[tgt])

    strategy_metrics: dict[str, Any] = {"edit/strategy": ec.strategy}
    if ec.strategy == "spectral":
        edit, strategy_metrics = spectral_edit(cfg, art, x_i, data.labels["train"], forget, strategy_metrics)
    else:
        stats = None
        if ec.targets != "nearest_retained":  # the reference's targets need every retained key
            stats, hit, stats_time = cached_key_statistics(cfg, art, x_i, x_j, data.labels["train"], n_cls)
            strategy_metrics.update({"edit/stats_cache_hit": hit, "edit/stats_time_s": stats_time})
        edit = unlearn_classes(
            art.kae,
            x_i,
            x_j,
            data.labels["train"],
            forget,
            n_cls,
            targets=ec.targets,
            redirect_to=ec.redirect_to,
            keys=ec.keys_from,
            mu=ec.mu,
            lam=ec.lam,
            form=ec.form,
            stats=stats,
        )
        info = edit.info
        log.info(
            "EMMET: %d edit keys, %d preserved, %s form, %s solve, cond %.3g, %.3f s (solve %.3f s)",
            info.n_edit,
            info.n_preserve,
            info.form,
            info.solver,
            info.cond,
            edit.time_s,
            edit.solve_time_s,
        )
    info = edit.info

    labels = data.labels["test"]
    test_xi = data.reps["test"][src]
    base_pred = base.net(data.inputs["test"]).argmax(1)
    before = surrogate_predictions(base.trajectory, tgt, art, test_xi, edit.K_before)
    after = surrogate_predictions(base.trajectory, tgt, art, test_xi, edit.K_after)
    acc_b, acc_a = (class_accuracies(p, labels, n_cls, forget) for p in (before, after))
    fmask = torch.isin(labels, torch.tensor(forget))
    eig_b, eig_a = (torch.linalg.eigvals(K).abs().max().item() for K in (edit.K_before, edit.K_after))

    m: dict[str, Any] = {"edit/target_class": forget, "edit/targets": ec.targets, "edit/keys_from": ec.keys_from}
    m.update(strategy_metrics)
    m.update({"kae/key": art.key, "kae/cache_hit": art.cache_hit, "base/cache_hit": base.cache_hit})
    base_acc = class_accuracies(base_pred, labels, n_cls, forget)
    m.update({f"base/{k}": v for k, v in base_acc.items()})
    for tag, acc in (("before", acc_b), ("after", acc_a)):
        for k, v in acc.items():
            m[f"edit/{k}_{tag}"] = v
    m["edit/forget_predicted_as"] = torch.bincount(after[fmask], minlength=n_cls).tolist()
    m["edit/retain_changed"] = (after[~fmask] != before[~fmask]).double().mean().item()
    m["edit/spectral_radius_before"], m["edit/spectral_radius_after"] = eig_b, eig_a
    m["edit/time_s"], m["edit/solve_time_s"] = edit.time_s, edit.solve_time_s
    m["edit/exclusive_energy"] = edit.exclusive_energy
    m.update({"edit/n_edit_keys": info.n_edit, "edit/n_preserved_keys": info.n_preserve, "edit/form": info.form})
    m.update({"edit/solver": info.solver, "edit/cond": info.cond, "edit/fallback": info.fallback_reason or ""})
    m["edit/delta_rel_norm"] = (
        torch.linalg.matrix_norm(edit.K_after - edit.K_before) / torch.linalg.matrix_norm(edit.K_before)
    ).item()

    if ec.compare_retrain:
        m.update(retrain_comparison(cfg, forget, run_dir, data, after, edit.time_s))

    out = run_dir / "edit"
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {"K_before": edit.K_before.contiguous(), "K_after": edit.K_after.contiguous()},
        str(out / "operator.safetensors"),
    )
    (out / "edit.json").write_text(
        json.dumps({"kae_key": art.key, "forget": forget, "config": OmegaConf.to_container(ec, resolve=True)}, indent=2)
    )
    loggers = build_loggers(cfg, run_dir, cfg.name)
    if ec.figure:
        fig = figure(cfg, art, data, edit, forget, out, getattr(base.datamodule, "class_names", None))
        m["edit/figure"] = str(fig)
        from kaelab.viz.log import log_images

        log_images(loggers, {"edit/observable_pcs": fig})
    log_metrics_to(loggers, m)
    log.info(
        "forget %s: forget acc %.4f -> %.4f, retain acc %.4f -> %.4f, edit %.2f s",
        forget,
        m["edit/forget_acc_before"],
        m["edit/forget_acc_after"],
        m["edit/retain_acc_before"],
        m["edit/retain_acc_after"],
        edit.time_s,
    )
    return m


def cached_key_statistics(cfg: DictConfig, art: KAEArtifact, x_i, x_j, labels, n_cls: int):
    """The KAE's per-class key statistics (kaelab.editing.statistics) over its training pairs,
    computed once per KAE and cached: every later edit of this KAE, whatever it forgets, encodes
    only the forgotten samples. Returns (statistics, cache hit, seconds to load or build)."""
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

    key = config_key("edit_stats", art.key)
    stats = ArtifactCache(cfg.paths.cache_dir).load("edit_stats", key, build, load, {"kae": art.key})
    return stats, not built, time.perf_counter() - t0


def spectral_edit(cfg: DictConfig, art: KAEArtifact, x_i, labels, forget: list[int], m: dict[str, Any]):
    """``edit.strategy=spectral`` (kaelab.editing.spectral) on the cached decomposition of the KAE's
    generator (the artifact ``task=spectrum`` writes); its load or build time counts as edit time."""
    from kaelab.editing.spectral import spectral_unlearn
    from kaelab.koopman.spectrum_pipeline import cached_spectrum

    ec = cfg.edit
    t0 = time.perf_counter()
    spec, hit = cached_spectrum(cfg, art)
    t_spec = time.perf_counter() - t0
    edit, sel = spectral_unlearn(
        art.kae, spec, x_i, labels, forget, ec.spectral_ratio, ec.spectral_scale, ec.spectral_max_modes
    )
    edit.time_s += t_spec
    m.update(
        {
            "edit/spectral_modes": sel.modes,
            "edit/spectral_specificity": sel.specificity,
            "edit/spectral_forget_energy_share": sel.forget_energy_share,
            "edit/spectral_retain_energy_share": sel.retain_energy_share,
            "edit/spectral_decomposition_cache_hit": hit,
            "edit/spectral_decomposition_time_s": t_spec,
        }
    )
    log.info(
        "spectral edit: %d modes %s suppressed (x%g), carrying %.3f of the forgotten and %.3f of the retained "
        "samples' modal energy, %.3f s",
        len(sel.modes),
        sel.modes,
        ec.spectral_scale,
        sel.forget_energy_share,
        sel.retain_energy_share,
        edit.time_s,
    )
    return edit, m


def retrain_comparison(cfg, forget, run_dir, data, edited_pred, edit_time_s) -> dict[str, Any]:
    """The unlearning literature's gold standard: the base model retrained without the classes."""
    t0 = time.perf_counter()
    rb = retrain_without(cfg, forget, run_dir)
    labels = data.labels["test"]
    with torch.no_grad():
        rpred = rb.net(data.inputs["test"]).argmax(1)
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


def figure(cfg, art: KAEArtifact, data, edit, forget: list[int], out: Path, class_names=None) -> Path:
    """Figure 4: observable-space outputs of test samples before / after the edit."""
    from kaelab.editing.unlearning import encode
    from kaelab.viz.editing import plot_edit_pcs

    n = cfg.edit.figure_points
    x_i = data.reps["test"][art.source][:n]
    z = encode(art.kae, art.prep.transform_source(x_i)).double()
    before, after = z @ edit.K_before.T, z @ edit.K_after.T
    names = ", ".join(str(c) for c in forget)
    how = cfg.edit.targets if cfg.edit.strategy == "emmet" else f"{cfg.edit.strategy} edit"
    title = f"{cfg.name}: operator edited to forget class {names} ({how})"
    labels = data.labels["test"][:n]
    return plot_edit_pcs(before, after, labels, forget, out / "observable_pcs.png", title, class_names)
