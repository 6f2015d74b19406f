"""``task=kae``: base model -> representations -> preprocessing -> KAE -> surrogate accuracy.

Each upstream artifact comes from the cache (kaelab.cache), so a sweep over KAE settings trains the
base model and extracts its representations once.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file

from kaelab.base_model import base_model
from kaelab.cache import ArtifactCache
from kaelab.data import InMemoryDataModule
from kaelab.errors import ConfigError
from kaelab.koopman.kae import LOSS_TERMS, KoopmanAutoencoder
from kaelab.koopman.operator import G_INITS
from kaelab.koopman.preprocessing import PairPreprocessor
from kaelab.koopman.representations import cached_representations, representation_names, resolve_layer
from kaelab.koopman.surrogate import evaluate_surrogate, mean_loss_terms
from kaelab.models import build_net
from kaelab.training import build_trainer, log_final_metrics, log_hyperparams

log = logging.getLogger(__name__)


def check_kae_config(cfg: DictConfig) -> tuple[str, str]:
    """Fail fast (before any training) on invalid KAE settings; returns (source, target) names."""
    kc = cfg.kae
    if kc is None:
        raise ConfigError("task=kae needs a kae config: add +kae=yinyang, or use +experiment=yinyang_kae")
    for term in LOSS_TERMS:
        if kc.lambdas[term] < 0:
            raise ConfigError(f"kae.lambdas.{term}={kc.lambdas[term]} must be >= 0")
    for key in ("k", "epochs", "batch_size", "latent_dim"):
        if kc[key] < 1:
            raise ConfigError(f"kae.{key}={kc[key]} must be >= 1")
    if kc.g_init not in G_INITS:
        raise ConfigError(f"kae.g_init must be one of {G_INITS}, got {kc.g_init!r}")
    net = build_net(OmegaConf.to_container(cfg.model.net, resolve=True))  # untrained: names only
    src = resolve_layer(net, kc.source_layer, "kae.source_layer")
    tgt = resolve_layer(net, kc.target_layer, "kae.target_layer")
    names = representation_names(net)
    if names.index(src) >= names.index(tgt):
        raise ConfigError(
            f"kae.source_layer ({src}) must come before kae.target_layer ({tgt}): the KAE maps x_i to x_j, i < j"
        )
    return src, tgt


def build_kae(cfg: DictConfig, dim: int) -> KoopmanAutoencoder:
    kc = cfg.kae
    return KoopmanAutoencoder(
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
    )


def kae_task(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    src, tgt = check_kae_config(cfg)
    kc = cfg.kae
    base = base_model(cfg, run_dir / "base_model")
    dm = base.datamodule
    # fast_dev_run is a smoke test of the whole stage: 2048 samples per split (cached separately,
    # as the base model's key includes fast_dev_run)
    n = 2048 if cfg.trainer.fast_dev_run else None
    inputs = {s: dm.tensors(s)[0][:n] for s in dm.splits}
    labels = {s: dm.tensors(s)[1][:n] for s in dm.splits}
    reps = cached_representations(ArtifactCache(cfg.paths.cache_dir), base.key, base.net, inputs, [src, tgt])

    prep = PairPreprocessor(kc.q, kc.scale).fit(reps["train"][src], reps["train"][tgt])
    pairs = {s: (prep.transform_source(r[src]), prep.transform_target(r[tgt])) for s, r in reps.items()}
    pair_dm = InMemoryDataModule(pairs, batch_size=kc.batch_size, shuffle_seed=kc.seed)
    pair_dm.setup()

    L.seed_everything(kc.seed, workers=True, verbose=False)
    kae = build_kae(cfg, dim=pairs["train"][0].shape[1])
    kae_dir = run_dir / "kae"
    trainer = build_trainer(cfg, kae_dir, kc.epochs, run_name=f"{cfg.name}-kae")
    log_hyperparams(trainer, cfg)
    t0 = time.perf_counter()
    trainer.fit(kae, datamodule=pair_dm)
    train_time = time.perf_counter() - t0
    if trainer.interrupted:
        raise KeyboardInterrupt
    kae.eval()

    metrics: dict[str, Any] = {"kae/source_layer": src, "kae/target_layer": tgt, "kae/train_time_s": train_time}
    metrics["base/cache_hit"] = base.cache_hit
    metrics["kae/steps"] = trainer.global_step
    for split in ("test", "train"):
        metrics.update(
            evaluate_surrogate(
                base.net,
                tgt,
                kae,
                prep,
                reps[split][src],
                reps[split][tgt],
                inputs[split],
                labels[split],
                dm.num_classes,
                split=split,
            )
        )
    for split in ("train", "test"):
        prefix = "kae/loss_" if split == "train" else "kae/test_loss_"
        for term, value in mean_loss_terms(kae, *pairs[split], kc.batch_size).items():
            metrics[prefix + term] = value
    metrics["kae/loss"] = sum(kae.lambdas[t] * metrics[f"kae/loss_{t}"] for t in LOSS_TERMS)
    log_final_metrics(trainer, metrics)

    if not cfg.trainer.fast_dev_run:
        kae_dir.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(kae_dir / "kae.ckpt")
        save_file(prep.state_dict(), str(kae_dir / "preprocessor.safetensors"))
    log.info(
        "base/test_acc=%.4f kae/test_acc=%.4f agreement=%.4f state_fvu=%.4f",
        metrics["base/test_acc"],
        metrics["kae/test_acc"],
        metrics["kae/agreement"],
        metrics["kae/state_fvu"],
    )
    return metrics
