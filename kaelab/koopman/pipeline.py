"""``task=kae``: base model -> representations -> preprocessing -> KAE -> surrogate accuracy.

The stage is the public API (``PairPreprocessor``, ``KAE``, ``evaluate_surrogate``,
``kae_path_fidelity``) plus the cache, the run's Trainer and its loggers. Every upstream artifact
comes from the cache (kaelab.cache), and so does the trained KAE itself (``cached_kae``): a sweep
over KAE settings trains the base model and extracts its representations once, and an edit run, a
topology analysis or a sweep over edit targets trains each KAE once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from kaelab.base_model import BaseModel, base_model, trainer_key_settings, trajectory_spec
from kaelab.cache import ArtifactCache, config_key
from kaelab.errors import ConfigError
from kaelab.fileio import optional_output
from kaelab.koopman.config import LOSS_TERMS
from kaelab.koopman.estimator import KAE
from kaelab.koopman.kae import KoopmanAutoencoder
from kaelab.koopman.path import BlockAligner, block_steps, intermediate_blocks, kae_path_fidelity
from kaelab.koopman.preprocessing import PairPreprocessor
from kaelab.koopman.representations import Representations, resolve_layer, split_representations
from kaelab.koopman.surrogate import evaluate_surrogate, mean_loss_terms
from kaelab.metrics import write_metrics
from kaelab.models import build_net, stage_names
from kaelab.models.positions import positions_metrics
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


# ------------------------------------------------------------------------------------- checks
def kae_layers(cfg: DictConfig) -> tuple[str, str]:
    """The KAE's (source, target) layers resolved against the (untrained) network, before any
    training: they must exist, come in order, and leave room for the path's blocks. The ``kae``
    group's values are checked before (``kaelab.koopman.config.check_kae_config``)."""
    kc = cfg.kae
    net = build_net(OmegaConf.to_container(cfg.model.net, resolve=True))  # untrained: names only
    names = stage_names(net, trajectory_spec(cfg))
    src = resolve_layer(names, kc.source_layer, "kae.source_layer")
    tgt = resolve_layer(names, kc.target_layer, "kae.target_layer")
    if names.index(src) >= names.index(tgt):
        raise ConfigError(
            f"kae.source_layer ({src}) must come before kae.target_layer ({tgt}): the KAE maps x_i to x_j, i < j"
        )
    if OmegaConf.select(cfg, "model.positions", default=None) is not None and tgt != names[-1]:
        # A per-position surrogate state is scored through the rest of the network; after an
        # earlier block that rest attends across positions, and running it on the whole window with
        # one position replaced would score a one-position intervention, not the KAE's stand-in for
        # the blocks. So the target is the last state, whose head reads each position alone.
        raise ConfigError(
            f"kae.target_layer={tgt} with model.positions: the blocks after it attend across positions, so a single "
            f"position's surrogate state has no rest of the network; use the last state ({names[-1]}, "
            "kae.target_layer=-1)"
        )
    if kc.path.lam != 0 or kc.path.steps is not None:  # the report alone skips a KAE too short for the blocks
        path_mapping(kc, names, src, tgt)
    return src, tgt


def path_mapping(kc: DictConfig, names: list[str], src: str, tgt: str) -> tuple[list[str], list[int]]:
    """The intermediate blocks between x_i and x_j and their KAE steps (kaelab.koopman.path)."""
    blocks = intermediate_blocks(names, src, tgt)
    if kc.path.lam > 0 and not blocks:
        raise ConfigError(f"kae.path.lam={kc.path.lam} > 0 but no block lies between {src} and {tgt}")
    steps = None if kc.path.steps is None else list(kc.path.steps)
    return blocks, (block_steps(len(blocks), kc.k, steps) if blocks else [])


# ---------------------------------------------------------------------------- the KAE artifact
def kae_estimator(kc: DictConfig, path_steps: list[int] | None = None) -> KAE:
    """The (unfitted) ``KAE`` of a ``kae`` config; the path loss's settings only with ``kae.path.lam`` > 0."""
    path = {"path_lambda": float(kc.path.lam), "path_steps": path_steps, "path_rows": kc.path.rows}
    return KAE(
        epochs=kc.epochs, batch_size=kc.batch_size, seed=kc.seed,
        hidden=list(kc.hidden), latent_dim=kc.latent_dim, k=kc.k, lambdas={t: float(kc.lambdas[t]) for t in LOSS_TERMS},
        g_init=kc.g_init, negative_slope=kc.negative_slope, lr=kc.lr, weight_decay=kc.weight_decay,
        warmup_frac=kc.warmup_frac, recon_reduction=kc.recon_reduction, grad_clip=kc.grad_clip,
        **(path if kc.path.lam > 0 else {}),
    )  # fmt: skip


@dataclass
class KAEArtifact:
    """A trained KAE with its fitted preprocessing, as stored in the cache (``cache/kae/<key>/``)."""

    model: KAE
    prep: PairPreprocessor
    key: str
    path: Path
    source: str
    target: str
    train_metrics: dict[str, Any]  # kae/train_time_s, kae/steps of the run that trained it
    cache_hit: bool = True
    content_hash: str = ""  # of its cache entry's files (ArtifactCache.content_hash): in derived keys

    @property
    def kae(self) -> KoopmanAutoencoder:
        return self.model.module_


def kae_key(
    cfg: DictConfig, base_key: str, src: str, tgt: str, split_sizes: dict[str, int], inputs: str | None = None
) -> str:
    """What determines a trained KAE: the base model, the two layers, the data it sees, the KAE
    config (preprocessing, architecture, losses, optimisation, seed; the path loss's settings when
    it trains, not the path report), the trainer settings that change training and ``inputs``, the
    content hash of the representations it trains on (``kae_inputs``): a KAE follows them when they
    are rebuilt with other content under the same keys."""
    kae = OmegaConf.to_container(cfg.kae, resolve=True)
    path = kae.pop("path")
    kae["path"] = {k: path[k] for k in ("lam", "steps", "rows")} if path["lam"] > 0 else None
    return config_key("kae", base_key, src, tgt, split_sizes, kae, trainer_key_settings(cfg), inputs)


def kae_inputs(cfg: DictConfig, names: list[str], data: Representations, src: str, tgt: str) -> str:
    """The content hash of the representations a KAE trains on: x_i and x_j, and the intermediate
    blocks when the path loss trains (``kae.path.lam`` > 0)."""
    blocks = path_mapping(cfg.kae, names, src, tgt)[0] if cfg.kae.path.lam > 0 else []
    return data.content_hash([src, tgt, *blocks])


def load_kae(path: Path, src: str, tgt: str, key: str) -> KAEArtifact:
    """A KAE cache entry (``<cache_dir>/kae/<key>``) -> KAEArtifact, with the entry's content hash
    (safetensors and JSON only: no pickle is loaded)."""
    prep = PairPreprocessor().load_state_dict(load_file(str(path / "preprocessor.safetensors")))
    train_metrics = json.loads((path / "metrics.json").read_text())
    content = ArtifactCache(path.parent.parent).content_hash(path.parent.name, path.name)
    return KAEArtifact(KAE.load(path), prep, key, path, src, tgt, train_metrics, content_hash=content)


def block_aligner(kc: DictConfig, data: Representations, blocks: list[str], prep: PairPreprocessor, tgt: str):
    """The intermediate blocks' preprocessing into x_j's space, fitted on the training split."""
    train = data.reps["train"]
    return BlockAligner(kc.q, kc.scale).fit({b: train[b] for b in blocks}, prep.transform_target(train[tgt]))


def train_kae(cfg: DictConfig, names: list[str], data: Representations, src: str, tgt: str, work_dir: Path, out: Path):
    """Fit the preprocessing and the KAE on the training split (validation: ``val/loss``), with the
    run's Trainer (logs under ``work_dir``); write them to ``out``; return the training metrics."""
    kc = cfg.kae
    prep = PairPreprocessor(kc.q, kc.scale).fit(data.reps["train"][src], data.reps["train"][tgt])
    pairs = {s: prep.transform(r[src], r[tgt]) for s, r in data.reps.items()}
    path_steps = None
    if kc.path.lam > 0:  # the aligned intermediate blocks ride along as a third tensor
        blocks, path_steps = path_mapping(kc, names, src, tgt)
        aligner = block_aligner(kc, data, blocks, prep, tgt)
        pairs = {s: (*pair, aligner.stack(data.reps[s])) for s, pair in pairs.items()}
    guard = [SpikeRollback(kc.spike_rollback)] if kc.spike_rollback is not None else []
    trainer = build_trainer(
        cfg.trainer, work_dir, kc.epochs, guard, logger=cfg.logger, callbacks=cfg.callbacks, run_name=f"{cfg.name}-kae"
    )
    log_hyperparams(trainer, cfg)
    train = pairs["train"]
    kae = kae_estimator(kc, path_steps).fit(*train[:2], blocks=train[2] if path_steps else None,
                                            val=pairs.get("val"), trainer=trainer)  # fmt: skip
    if trainer.interrupted:
        raise KeyboardInterrupt
    adopt_worker_csv(trainer)
    kae.save(out)
    save_file(prep.state_dict(), str(out / "preprocessor.safetensors"))
    metrics: dict[str, Any] = {"kae/train_time_s": kae.fit_time_s_, "kae/steps": fit_progress(trainer)[1]}
    if guard:
        rollbacks = int(trainer.callback_metrics.get("kaelab/rollbacks", 0))  # also from DDP workers
        metrics["kae/rollbacks"] = rollbacks
        if rollbacks == len(guard[0].rollbacks):  # in this process: which epochs
            metrics["kae/rollback_epochs"] = [r["epoch"] for r in guard[0].rollbacks]
    return metrics


def cached_kae(cfg: DictConfig, base: BaseModel, data: Representations, src: str, tgt: str, work_dir: Path):
    """The KAE for ``cfg`` between layers ``src`` and ``tgt`` of ``base``, trained once and cached.

    Training happens under the cache's lock in a temporary directory that is renamed into place
    when complete; later calls load it. Nothing ever writes into an existing entry."""
    sizes = {s: len(x) for s, x in data.inputs.items()}
    inputs = kae_inputs(cfg, base.trajectory.names, data, src, tgt)
    key = kae_key(cfg, base.key, src, tgt, sizes, inputs)
    trained_now = False

    def build(tmp: Path) -> None:
        nonlocal trained_now
        trained_now = True
        write_metrics(tmp / "metrics.json", train_kae(cfg, base.trajectory.names, data, src, tgt, work_dir, tmp))

    manifest = {"base_model": base.key, "inputs": inputs, "source": src, "target": tgt, "splits": sizes}
    manifest["kae"] = OmegaConf.to_container(cfg.kae, resolve=True)
    # a file the loader cannot read makes the cache rebuild the entry (kaelab.cache.ArtifactCache.load)
    art = ArtifactCache(cfg.paths.cache_dir).load("kae", key, build, lambda p: load_kae(p, src, tgt, key), manifest)
    art.cache_hit = not trained_now
    return art


def base_representations(cfg: DictConfig, base: BaseModel, layers: list[str]) -> Representations:
    """Representations of ``layers`` for every split, from the cache (``trainer.fast_dev_run``: the
    first FAST_DEV_SAMPLES of each split)."""
    n = FAST_DEV_SAMPLES if cfg.trainer.fast_dev_run else None
    return split_representations(ArtifactCache(cfg.paths.cache_dir), base, layers, n)


def trained_kae(
    cfg: DictConfig, run_dir: Path, all_layers: bool = False, layers: tuple[str, str] | None = None
) -> tuple[BaseModel, Representations, KAEArtifact]:
    """Base model, representations and KAE for ``cfg`` (each from the cache, built if missing):
    what every stage downstream of the KAE (surrogate, editing, topology) starts from.

    With ``all_layers`` (or a path-regularised KAE) the representations of every block are read,
    one cache entry for all of them (the one the topology stage reads), else only x_i and x_j.
    ``layers``: (source, target) when already resolved (``kae_layers``)."""
    src, tgt = layers or kae_layers(cfg)
    base = base_model(cfg, run_dir / "base_model")
    layers = base.trajectory.names if all_layers or cfg.kae.path.lam > 0 else [src, tgt]
    data = base_representations(cfg, base, layers)
    return base, data, cached_kae(cfg, base, data, src, tgt, run_dir / "kae")


# ------------------------------------------------------------------------------------ reports
def surrogate_metrics(kc: DictConfig, base: BaseModel, data: Representations, art: KAEArtifact) -> dict[str, Any]:
    """Surrogate accuracy (test, train and, when the data has one, validation split) and the final
    value of each loss term. ``kae/val_acc`` is what a search over KAE settings may optimise
    (``optimized_metric``); the test split only reports."""
    src, tgt, kae, prep = art.source, art.target, art.kae, art.prep
    metrics: dict[str, Any] = {"kae/source_layer": src, "kae/target_layer": tgt, **art.train_metrics}
    metrics.update({"base/cache_hit": base.cache_hit, "kae/cache_hit": art.cache_hit, "kae/key": art.key})
    metrics.update(positions_metrics(data.positions, data.where))
    for split in [s for s in ("test", "train", "val") if s in data.reps]:
        r = data.reps[split]
        metrics.update(
            evaluate_surrogate(base.readout, tgt, kae, prep, r[src], r[tgt], data.inputs[split],
                               data.labels[split], data.num_classes, split, where=data.where.get(split))
        )  # fmt: skip
    for split, prefix in (("train", "kae/loss_"), ("test", "kae/test_loss_")):
        pair = prep.transform(data.reps[split][src], data.reps[split][tgt])
        for term, value in mean_loss_terms(kae, *pair, kc.batch_size).items():
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
            art.key, metrics["kae/state_fvu"], metrics["kae/test_acc"], metrics["base/test_acc"], art.path,
        )  # fmt: skip


def path_metrics(cfg: DictConfig, base: BaseModel, data: Representations, art: KAEArtifact):
    """Path fidelity on the test split (``path/*``; the aligner fitted on the training split;
    kaelab.koopman.path); its figure is ``path_figure``."""
    kc = cfg.kae
    try:
        blocks, steps = path_mapping(kc, base.trajectory.names, art.source, art.target)
    except ConfigError as err:  # only reachable without kae.path.lam and steps (checked up front)
        log.warning("no path fidelity report: %s", err)
        return {}
    if not blocks:
        return {}
    aligner = block_aligner(kc, data, blocks, art.prep, art.target)
    test = data.reps["test"]
    x_i, x_j = art.prep.transform(test[art.source], test[art.target])
    fid = kae_path_fidelity(art.model, x_i, x_j, [aligner.transform(b, test[b]) for b in blocks], steps)
    m: dict[str, Any] = {"path/blocks": blocks, "path/steps": steps, "path/lam": float(kc.path.lam)}
    for key in ("fvu", "cka", "fvu_line"):
        m[f"path/{key}_per_block"] = fid[key]
        m[f"path/{key}_mean"] = sum(fid[key]) / len(fid[key])
    log.info(
        "path fidelity (test): FVU per block %s (mean %.4f; straight line %.4f), CKA %s",
        [round(v, 4) for v in fid["fvu"]], m["path/fvu_mean"], m["path/fvu_line_mean"],
        [round(v, 4) for v in fid["cka"]],
    )  # fmt: skip
    return m


def path_figure(cfg: DictConfig, m: dict[str, Any], run_dir: Path) -> Path:
    """The path-fidelity figure of ``path_metrics``' report ``m`` (kaelab.viz.path)."""
    from kaelab.viz.path import plot_path_fidelity

    fid = {key: m[f"path/{key}_per_block"] for key in ("fvu", "cka", "fvu_line")}
    title = f"{cfg.name}: KAE steps vs the base model's blocks (test, path lambda {m['path/lam']:g})"
    return plot_path_fidelity(m["path/blocks"], m["path/steps"], cfg.kae.k, fid, run_dir / "path_fidelity.png", title)


def log_kae(cfg: DictConfig, run_dir: Path, metrics: dict[str, Any]) -> None:
    """The report and the path figure to the run's own loggers (not the KAE's training logs)."""
    loggers = build_loggers(cfg.logger, run_dir, cfg.name)
    if metrics.get("path/figure"):
        from kaelab.viz.log import log_images

        log_images(loggers, {"path/fidelity": Path(metrics["path/figure"])})
    log_metrics_to(loggers, metrics)


def kae_task(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Reads ``kae`` (and the base model's groups upstream); writes ``kae/*``, ``base/*``, ``path/*``:
    metrics.json first, then the figures (one that cannot be written: ``kae/artifact_errors``)."""
    report_path = bool(cfg.kae.path.report)
    base, data, art = trained_kae(cfg, run_dir, all_layers=report_path)
    metrics = surrogate_metrics(cfg.kae, base, data, art)
    if report_path:
        metrics.update(path_metrics(cfg, base, data, art))
    write_metrics(run_dir / "metrics.json", metrics)  # first: an output below that fails loses no result
    from kaelab.viz.kae import plot_kae_picture  # the KAE's picture of the network (paper, Figure 3, bottom)

    picture = run_dir / "kae_picture.png"
    optional_output(metrics, "kae", str(picture), lambda: plot_kae_picture(art, data, picture, cfg.name))
    if metrics.get("path/blocks"):
        path = str(run_dir / "path_fidelity.png")
        figure = optional_output(metrics, "kae", path, lambda: path_figure(cfg, metrics, run_dir))
        if figure is not None:
            metrics["path/figure"] = str(figure)
    optional_output(metrics, "kae", "the run's loggers", lambda: log_kae(cfg, run_dir, metrics))
    log.info(
        "base/test_acc=%.4f kae/test_acc=%.4f agreement=%.4f state_fvu=%.4f (KAE %s)",
        metrics["base/test_acc"], metrics["kae/test_acc"], metrics["kae/agreement"], metrics["kae/state_fvu"],
        "from the cache" if art.cache_hit else "trained now",
    )  # fmt: skip
    if "kae/test_bpb" in metrics:  # token positions as samples
        log.info("bits per token (test): base %.4f, KAE %.4f", metrics["base/test_bpb"], metrics["kae/test_bpb"])
    return metrics
