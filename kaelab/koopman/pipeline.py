"""``task=kae``: base model -> representations -> preprocessing -> KAE -> surrogate accuracy.

Every upstream artifact comes from the cache (kaelab.cache), and so does the trained KAE itself
(``cached_kae``): a sweep over KAE settings trains the base model and extracts its representations
once, and an edit run, a topology analysis or a sweep over edit targets trains each KAE once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from kaelab.base_model import BaseModel, base_model, trainer_key_settings, trajectory_spec
from kaelab.cache import ArtifactCache, config_key
from kaelab.data import InMemoryDataModule
from kaelab.errors import ConfigError
from kaelab.koopman.kae import LOSS_TERMS, RECON_REDUCTIONS, KoopmanAutoencoder
from kaelab.koopman.operator import G_INITS
from kaelab.koopman.preprocessing import PairPreprocessor
from kaelab.koopman.representations import cached_representations, resolve_layer
from kaelab.koopman.surrogate import evaluate_surrogate, mean_loss_terms
from kaelab.metrics import write_metrics
from kaelab.models import build_net, stage_names
from kaelab.training import build_loggers, build_trainer, log_hyperparams, log_metrics_to

log = logging.getLogger(__name__)

FAST_DEV_SAMPLES = 2048  # fast_dev_run: the whole stage on this many samples per split


def check_kae_config(cfg: DictConfig) -> tuple[str, str]:
    """Fail fast (before any training) on invalid KAE settings; returns (source, target) names."""
    kc = cfg.kae
    if kc is None:
        raise ConfigError("this task needs a kae config: add +kae=yinyang, or use +experiment=yinyang_kae")
    for term in LOSS_TERMS:
        if kc.lambdas[term] < 0:
            raise ConfigError(f"kae.lambdas.{term}={kc.lambdas[term]} must be >= 0")
    for key in ("k", "epochs", "batch_size", "latent_dim"):
        if kc[key] < 1:
            raise ConfigError(f"kae.{key}={kc[key]} must be >= 1")
    if kc.g_init not in G_INITS:
        raise ConfigError(f"kae.g_init must be one of {G_INITS}, got {kc.g_init!r}")
    if kc.get("grad_clip") is not None and not kc.grad_clip > 0:
        raise ConfigError(f"kae.grad_clip={kc.grad_clip} must be > 0 (or null: no clipping)")
    if kc.recon_reduction not in RECON_REDUCTIONS:
        raise ConfigError(f"kae.recon_reduction must be one of {RECON_REDUCTIONS}, got {kc.recon_reduction!r}")
    net = build_net(OmegaConf.to_container(cfg.model.net, resolve=True))  # untrained: names only
    names = stage_names(net, trajectory_spec(cfg))
    src = resolve_layer(names, kc.source_layer, "kae.source_layer")
    tgt = resolve_layer(names, kc.target_layer, "kae.target_layer")
    if names.index(src) >= names.index(tgt):
        raise ConfigError(
            f"kae.source_layer ({src}) must come before kae.target_layer ({tgt}): the KAE maps x_i to x_j, i < j"
        )
    return src, tgt


def kae_kwargs(cfg: DictConfig, dim: int) -> dict[str, Any]:
    """Constructor arguments of the KoopmanAutoencoder for ``cfg.kae`` (saved with the artifact)."""
    kc = cfg.kae
    return dict(
        dim=dim,
        hidden=list(kc.hidden),
        latent_dim=kc.latent_dim,
        k=kc.k,
        lambdas={t: float(kc.lambdas[t]) for t in LOSS_TERMS},
        g_init=kc.g_init,
        negative_slope=kc.negative_slope,
        lr=kc.lr,
        weight_decay=kc.weight_decay,
        warmup_frac=kc.warmup_frac,
        recon_reduction=kc.recon_reduction,
        grad_clip=kc.grad_clip,
    )


def build_kae(cfg: DictConfig, dim: int) -> KoopmanAutoencoder:
    return KoopmanAutoencoder(**kae_kwargs(cfg, dim))


@dataclass
class Representations:
    """The base model's inputs, labels and representations per split (``reps[split][layer]``)."""

    inputs: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    reps: dict[str, dict[str, torch.Tensor]]
    num_classes: int


def base_representations(cfg: DictConfig, base: BaseModel, layers: list[str]) -> Representations:
    """Representations of ``layers`` for every split of the base model's data, from the cache.
    With ``trainer.fast_dev_run`` only the first FAST_DEV_SAMPLES of each split."""
    dm = base.datamodule
    n = FAST_DEV_SAMPLES if cfg.trainer.fast_dev_run else None
    inputs = {s: dm.tensors(s)[0][:n] for s in dm.splits}
    labels = {s: dm.tensors(s)[1][:n] for s in dm.splits}
    reps = cached_representations(ArtifactCache(cfg.paths.cache_dir), base.key, base.trajectory, inputs, layers)
    return Representations(inputs, labels, reps, dm.num_classes)


@dataclass
class KAEArtifact:
    """A trained KAE with its fitted preprocessing, as stored in the cache (``cache/kae/<key>/``)."""

    kae: KoopmanAutoencoder
    prep: PairPreprocessor
    key: str
    path: Path
    source: str
    target: str
    train_metrics: dict[str, Any]  # kae/train_time_s, kae/steps of the run that trained it
    cache_hit: bool = True

    FILES = ("kae.safetensors", "kae.json", "preprocessor.safetensors", "metrics.json")


def kae_key(cfg: DictConfig, base_key: str, src: str, tgt: str, split_sizes: dict[str, int]) -> str:
    """What determines a trained KAE: the base model, the two layers, the data it sees, the KAE
    config (preprocessing, architecture, losses, optimisation, seed) and the trainer settings that
    change training."""
    kae = OmegaConf.to_container(cfg.kae, resolve=True)
    if kae.get("grad_clip") is None:  # added later: off keeps the keys of KAEs trained before it
        kae.pop("grad_clip", None)
    return config_key("kae", base_key, src, tgt, split_sizes, kae, trainer_key_settings(cfg))


def load_kae(path: Path, src: str, tgt: str, key: str) -> KAEArtifact:
    """A KAE artifact directory -> KAEArtifact (safetensors and JSON only: no pickle is loaded)."""
    kwargs = json.loads((path / "kae.json").read_text())
    kae = KoopmanAutoencoder(**{k: v for k, v in kwargs.items() if k != "q"})
    kae.load_state_dict(load_file(str(path / "kae.safetensors")))
    kae.eval()
    prep = PairPreprocessor(kwargs.get("q"), 1.0).load_state_dict(load_file(str(path / "preprocessor.safetensors")))
    train_metrics = json.loads((path / "metrics.json").read_text())
    return KAEArtifact(kae, prep, key, path, src, tgt, train_metrics)


def cached_kae(cfg: DictConfig, base: BaseModel, data: Representations, src: str, tgt: str, work_dir: Path):
    """The KAE for ``cfg`` between layers ``src`` and ``tgt`` of ``base``, trained once and cached.

    Training (logs under ``work_dir``) happens under the cache's lock in a temporary directory that
    is renamed into place when complete; later calls load it. Nothing ever writes into an existing
    entry, so an artifact on disk is never modified by a downstream stage.
    """
    kc = cfg.kae
    sizes = {s: len(x) for s, x in data.inputs.items()}
    key = kae_key(cfg, base.key, src, tgt, sizes)
    trained_now = False

    def build(tmp: Path) -> None:
        nonlocal trained_now
        trained_now = True
        reps = data.reps
        prep = PairPreprocessor(kc.q, kc.scale).fit(reps["train"][src], reps["train"][tgt])
        pairs = {s: (prep.transform_source(r[src]), prep.transform_target(r[tgt])) for s, r in reps.items()}
        pair_dm = InMemoryDataModule(pairs, batch_size=kc.batch_size, shuffle_seed=kc.seed)
        pair_dm.setup()
        L.seed_everything(kc.seed, workers=True, verbose=False)
        kwargs = kae_kwargs(cfg, dim=pairs["train"][0].shape[1])
        kae = KoopmanAutoencoder(**kwargs)
        trainer = build_trainer(cfg, work_dir, kc.epochs, run_name=f"{cfg.name}-kae")
        log_hyperparams(trainer, cfg)
        t0 = time.perf_counter()
        trainer.fit(kae, datamodule=pair_dm)
        train_time = time.perf_counter() - t0
        if trainer.interrupted:
            raise KeyboardInterrupt
        save_file({k: v.contiguous() for k, v in kae.state_dict().items()}, str(tmp / "kae.safetensors"))
        (tmp / "kae.json").write_text(json.dumps({**kwargs, "q": kc.q}, indent=2))
        save_file(prep.state_dict(), str(tmp / "preprocessor.safetensors"))
        write_metrics(tmp / "metrics.json", {"kae/train_time_s": train_time, "kae/steps": trainer.global_step})

    manifest = {"base_model": base.key, "source": src, "target": tgt, "splits": sizes}
    manifest["kae"] = OmegaConf.to_container(kc, resolve=True)
    # a file the loader cannot read makes the cache rebuild the entry (kaelab.cache.ArtifactCache.load)
    art = ArtifactCache(cfg.paths.cache_dir).load("kae", key, build, lambda p: load_kae(p, src, tgt, key), manifest)
    art.cache_hit = not trained_now
    return art


def trained_kae(cfg: DictConfig, run_dir: Path) -> tuple[BaseModel, Representations, KAEArtifact]:
    """Base model, representations and KAE for ``cfg`` (each from the cache, built if missing):
    what every stage downstream of the KAE (surrogate, editing, topology) starts from."""
    src, tgt = check_kae_config(cfg)
    base = base_model(cfg, run_dir / "base_model")
    data = base_representations(cfg, base, [src, tgt])
    art = cached_kae(cfg, base, data, src, tgt, run_dir / "kae")
    return base, data, art


def surrogate_report(cfg: DictConfig, base: BaseModel, data: Representations, art: KAEArtifact) -> dict[str, Any]:
    """Surrogate accuracy (test and train splits) and the final value of each loss term."""
    src, tgt, kae, prep = art.source, art.target, art.kae, art.prep
    metrics: dict[str, Any] = {"kae/source_layer": src, "kae/target_layer": tgt, **art.train_metrics}
    metrics.update({"base/cache_hit": base.cache_hit, "kae/cache_hit": art.cache_hit, "kae/key": art.key})
    for split in ("test", "train"):
        r = data.reps[split]
        metrics.update(
            evaluate_surrogate(
                base.trajectory,
                tgt,
                kae,
                prep,
                r[src],
                r[tgt],
                data.inputs[split],
                data.labels[split],
                data.num_classes,
                split,
            )
        )
    for split in ("train", "test"):
        prefix = "kae/loss_" if split == "train" else "kae/test_loss_"
        r = data.reps[split]
        pair = prep.transform_source(r[src]), prep.transform_target(r[tgt])
        for term, value in mean_loss_terms(kae, *pair, cfg.kae.batch_size).items():
            metrics[prefix + term] = value
    metrics["kae/loss"] = sum(kae.lambdas[t] * metrics[f"kae/loss_{t}"] for t in LOSS_TERMS)
    warn_if_diverged(metrics, art)
    return metrics


def warn_if_diverged(metrics: dict[str, Any], art: KAEArtifact) -> None:
    """A KAE whose prediction explains none of x_j's variance did not train (e.g. a loss spike at
    the one-cycle schedule's peak lr): say so, since everything downstream (edits, topology of its
    steps) inherits it from the cache."""
    metrics["kae/diverged"] = bool(metrics["kae/state_fvu"] > 1.0)
    if metrics["kae/diverged"]:
        log.warning(
            "KAE %s: test state FVU %.3g > 1 (surrogate acc %.3f vs base %.3f): training diverged; lower kae.lr "
            "or set trainer.gradient_clip_val, and remove %s",
            art.key,
            metrics["kae/state_fvu"],
            metrics["kae/test_acc"],
            metrics["base/test_acc"],
            art.path,
        )


def kae_task(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    base, data, art = trained_kae(cfg, run_dir)
    metrics = surrogate_report(cfg, base, data, art)
    # the run's summary goes to its own loggers (run_dir/csv, ...), not into the KAE's training logs
    log_metrics_to(build_loggers(cfg, run_dir, cfg.name), metrics)
    log.info(
        "base/test_acc=%.4f kae/test_acc=%.4f agreement=%.4f state_fvu=%.4f (KAE %s)",
        metrics["base/test_acc"],
        metrics["kae/test_acc"],
        metrics["kae/agreement"],
        metrics["kae/state_fvu"],
        "from the cache" if art.cache_hit else "trained now",
    )
    return metrics
