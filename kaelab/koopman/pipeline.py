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
from kaelab.koopman.config import LOSS_TERMS, check_kae_values
from kaelab.koopman.kae import KoopmanAutoencoder
from kaelab.koopman.path import BlockAligner, block_steps, intermediate_blocks
from kaelab.koopman.preprocessing import PairPreprocessor
from kaelab.koopman.representations import cached_representations, resolve_layer
from kaelab.koopman.surrogate import evaluate_surrogate, mean_loss_terms
from kaelab.metrics import write_metrics
from kaelab.models import build_net, stage_names
from kaelab.rollback import SpikeRollback
from kaelab.training import (
    adopt_worker_csv,
    build_loggers,
    build_trainer,
    fit_progress,
    log_hyperparams,
    log_metrics_to,
)

log = logging.getLogger(__name__)

FAST_DEV_SAMPLES = 2048  # fast_dev_run: the whole stage on this many samples per split


def check_kae_config(cfg: DictConfig) -> tuple[str, str]:
    """Fail fast (before any training) on invalid KAE settings; returns (source, target) names."""
    kc = cfg.kae
    if kc is None:
        raise ConfigError("this task needs a kae config: add +kae=yinyang, or use +experiment=yinyang_kae")
    pc = path_cfg(cfg)
    check_kae_values(
        lambdas=OmegaConf.to_container(kc.lambdas), k=kc.k, g_init=kc.g_init, grad_clip=kc.get("grad_clip"),
        recon_reduction=kc.recon_reduction, spike_rollback=kc.get("spike_rollback"), path_lambda=pc.lam,
        path_rows=pc.rows, epochs=kc.epochs, batch_size=kc.batch_size, latent_dim=kc.latent_dim,
    )  # fmt: skip
    net = build_net(OmegaConf.to_container(cfg.model.net, resolve=True))  # untrained: names only
    names = stage_names(net, trajectory_spec(cfg))
    src = resolve_layer(names, kc.source_layer, "kae.source_layer")
    tgt = resolve_layer(names, kc.target_layer, "kae.target_layer")
    if names.index(src) >= names.index(tgt):
        raise ConfigError(
            f"kae.source_layer ({src}) must come before kae.target_layer ({tgt}): the KAE maps x_i to x_j, i < j"
        )
    if pc.lam != 0 or pc.steps is not None:  # the report alone skips a KAE too short for the blocks
        path_mapping(cfg, names, src, tgt)
    return src, tgt


def path_cfg(cfg: DictConfig) -> DictConfig:
    """``cfg.kae.path`` (absent in configs composed without the schema: the defaults)."""
    pc = cfg.kae.get("path") or OmegaConf.create({"lam": 0.0, "steps": None, "report": True})
    return pc if "rows" in pc else OmegaConf.merge(pc, {"rows": "all"})


def path_mapping(cfg: DictConfig, names: list[str], src: str, tgt: str) -> tuple[list[str], list[int]]:
    """The intermediate blocks between x_i and x_j and their KAE steps (kaelab.koopman.path)."""
    pc = path_cfg(cfg)
    blocks = intermediate_blocks(names, src, tgt)
    if pc.lam > 0 and not blocks:
        raise ConfigError(f"kae.path.lam={pc.lam} > 0 but no block lies between {src} and {tgt}")
    steps = block_steps(len(blocks), cfg.kae.k, None if pc.steps is None else list(pc.steps)) if blocks else []
    return blocks, steps


def path_trained(cfg: DictConfig) -> bool:
    return path_cfg(cfg).lam > 0


def kae_kwargs(cfg: DictConfig, dim: int, path_steps: list[int] | None = None) -> dict[str, Any]:
    """Constructor arguments of the KoopmanAutoencoder for ``cfg.kae`` (saved with the artifact;
    the path loss's only with ``kae.path.lam`` > 0)."""
    kc = cfg.kae
    pc = path_cfg(cfg)
    path = {"path_lambda": float(pc.lam), "path_steps": path_steps, "path_rows": pc.rows} if path_trained(cfg) else {}
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
        **path,
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
    # options added later keep the keys of KAEs trained before them while they are off
    for option in ("grad_clip", "spike_rollback"):
        if kae.get(option) is None:
            kae.pop(option, None)
    path = kae.pop("path", None) or {}
    if path.get("lam", 0.0) > 0:  # only the loss and its mapping change training, not the report
        kae["path"] = {"lam": path["lam"], "steps": path.get("steps")}
        if path.get("rows", "all") != "all":  # added later: the keys of path KAEs trained before it stay
            kae["path"]["rows"] = path["rows"]
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
        path_steps = None
        if path_trained(cfg):  # the aligned intermediate blocks ride along as a third tensor
            blocks, path_steps = path_mapping(cfg, base.trajectory.names, src, tgt)
            aligner = block_aligner(cfg, data, blocks, prep, tgt)
            pairs = {s: (*pair, aligner.stack(reps[s])) for s, pair in pairs.items()}
        pair_dm = InMemoryDataModule(pairs, batch_size=kc.batch_size, shuffle_seed=kc.seed)
        pair_dm.setup()
        L.seed_everything(kc.seed, workers=True, verbose=False)
        kwargs = kae_kwargs(cfg, dim=pairs["train"][0].shape[1], path_steps=path_steps)
        kae = KoopmanAutoencoder(**kwargs)
        guard = [SpikeRollback(kc.spike_rollback)] if kc.get("spike_rollback") is not None else []
        trainer = build_trainer(cfg, work_dir, kc.epochs, extra_callbacks=guard, run_name=f"{cfg.name}-kae")
        log_hyperparams(trainer, cfg)
        t0 = time.perf_counter()
        trainer.fit(kae, datamodule=pair_dm)
        train_time = time.perf_counter() - t0
        if trainer.interrupted:
            raise KeyboardInterrupt
        adopt_worker_csv(trainer)
        save_file({k: v.contiguous() for k, v in kae.state_dict().items()}, str(tmp / "kae.safetensors"))
        (tmp / "kae.json").write_text(json.dumps({**kwargs, "q": kc.q}, indent=2))
        save_file(prep.state_dict(), str(tmp / "preprocessor.safetensors"))
        train_metrics = {"kae/train_time_s": train_time, "kae/steps": fit_progress(trainer)[1]}
        if guard:
            rollbacks = int(trainer.callback_metrics.get("kaelab/rollbacks", 0))  # also from DDP workers
            train_metrics["kae/rollbacks"] = rollbacks
            if rollbacks == len(guard[0].rollbacks):  # in this process: which epochs
                train_metrics["kae/rollback_epochs"] = [r["epoch"] for r in guard[0].rollbacks]
        write_metrics(tmp / "metrics.json", train_metrics)

    manifest = {"base_model": base.key, "source": src, "target": tgt, "splits": sizes}
    manifest["kae"] = OmegaConf.to_container(kc, resolve=True)
    # a file the loader cannot read makes the cache rebuild the entry (kaelab.cache.ArtifactCache.load)
    art = ArtifactCache(cfg.paths.cache_dir).load("kae", key, build, lambda p: load_kae(p, src, tgt, key), manifest)
    art.cache_hit = not trained_now
    return art


def block_aligner(cfg: DictConfig, data: Representations, blocks: list[str], prep: PairPreprocessor, tgt: str):
    """The intermediate blocks' preprocessing into x_j's space, fitted on the training split."""
    train = data.reps["train"]
    anchor = prep.transform_target(train[tgt])
    return BlockAligner(cfg.kae.q, cfg.kae.scale).fit({b: train[b] for b in blocks}, anchor)


def trained_kae(
    cfg: DictConfig, run_dir: Path, all_layers: bool = False
) -> tuple[BaseModel, Representations, KAEArtifact]:
    """Base model, representations and KAE for ``cfg`` (each from the cache, built if missing):
    what every stage downstream of the KAE (surrogate, editing, topology) starts from.

    With ``all_layers`` (or a path-regularised KAE) the representations of every block are read,
    one cache entry for all of them (the one the topology stage reads), else only x_i and x_j."""
    src, tgt = check_kae_config(cfg)
    base = base_model(cfg, run_dir / "base_model")
    layers = base.trajectory.names if all_layers or path_trained(cfg) else [src, tgt]
    data = base_representations(cfg, base, layers)
    art = cached_kae(cfg, base, data, src, tgt, run_dir / "kae")
    return base, data, art


def surrogate_report(cfg: DictConfig, base: BaseModel, data: Representations, art: KAEArtifact) -> dict[str, Any]:
    """Surrogate accuracy (test, train and, when the data has one, validation split) and the final
    value of each loss term. ``kae/val_acc`` is what a search over KAE settings may optimise
    (``optimized_metric``); the test split only reports."""
    src, tgt, kae, prep = art.source, art.target, art.kae, art.prep
    metrics: dict[str, Any] = {"kae/source_layer": src, "kae/target_layer": tgt, **art.train_metrics}
    metrics.update({"base/cache_hit": base.cache_hit, "kae/cache_hit": art.cache_hit, "kae/key": art.key})
    for split in [s for s in ("test", "train", "val") if s in data.reps]:
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
            "(kae.grad_clip did not rescue the MNIST KAE) and remove %s",
            art.key,
            metrics["kae/state_fvu"],
            metrics["kae/test_acc"],
            metrics["base/test_acc"],
            art.path,
        )


def path_report(cfg: DictConfig, base: BaseModel, data: Representations, art: KAEArtifact, run_dir: Path):
    """Path fidelity on the test split (``path/*``) and its figure (kaelab.koopman.path)."""
    from kaelab.koopman.path import decoded_steps, path_fidelity

    try:
        blocks, steps = path_mapping(cfg, base.trajectory.names, art.source, art.target)
    except ConfigError as err:  # only reachable without kae.path.lam and steps (checked up front)
        log.warning("no path fidelity report: %s", err)
        return {}
    if not blocks:
        return {}
    aligner = block_aligner(cfg, data, blocks, art.prep, art.target)
    test = data.reps["test"]
    x_i, x_j = art.prep.transform_source(test[art.source]), art.prep.transform_target(test[art.target])
    true = [aligner.transform(b, test[b]) for b in blocks]
    k = art.kae.koopman.k
    fid = path_fidelity(decoded_steps(art.kae, x_i, steps), true, x_i, x_j, [t / k for t in steps])
    m: dict[str, Any] = {"path/blocks": blocks, "path/steps": steps, "path/lam": float(path_cfg(cfg).lam)}
    for key, vals in fid.items():
        m[f"path/{key}_per_block"] = vals
        m[f"path/{key}_mean"] = sum(vals) / len(vals)
    from kaelab.viz.path import plot_path_fidelity

    title = f"{cfg.name}: KAE steps vs the base model's blocks (test, path lambda {m['path/lam']:g})"
    fig = plot_path_fidelity(blocks, steps, k, fid, run_dir / "path_fidelity.png", title)
    m["path/figure"] = str(fig)
    log.info(
        "path fidelity (test): FVU per block %s (mean %.4f; straight line %.4f), CKA %s",
        [round(v, 4) for v in fid["fvu"]],
        m["path/fvu_mean"],
        m["path/fvu_line_mean"],
        [round(v, 4) for v in fid["cka"]],
    )
    return m


def kae_task(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    report_path = bool(path_cfg(cfg).report)
    base, data, art = trained_kae(cfg, run_dir, all_layers=report_path)
    metrics = surrogate_report(cfg, base, data, art)
    # the run's summary goes to its own loggers (run_dir/csv, ...), not into the KAE's training logs
    loggers = build_loggers(cfg, run_dir, cfg.name)
    if report_path:
        metrics.update(path_report(cfg, base, data, art, run_dir))
        if metrics.get("path/figure"):
            from kaelab.viz.log import log_images

            log_images(loggers, {"path/fidelity": Path(metrics["path/figure"])})
    log_metrics_to(loggers, metrics)
    log.info(
        "base/test_acc=%.4f kae/test_acc=%.4f agreement=%.4f state_fvu=%.4f (KAE %s)",
        metrics["base/test_acc"],
        metrics["kae/test_acc"],
        metrics["kae/agreement"],
        metrics["kae/state_fvu"],
        "from the cache" if art.cache_hit else "trained now",
    )
    return metrics
