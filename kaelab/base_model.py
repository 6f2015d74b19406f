"""Stage 1 of the data path: train (or load) the base classifier.

``train_task`` is ``task=train``: fit, test, metrics.json, resumable with ``ckpt_path``.
``base_model`` is what downstream stages (KAE, DMD) call: it returns a trained model from the
artifact cache, keyed by the data + model config, training it once if it is not there yet, or
loads the user's ``model.checkpoint``.
"""

from __future__ import annotations

import functools
import json
import logging
import pickle
import re
import shutil
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from kaelab.cache import ArtifactCache, config_key, file_digest
from kaelab.data import TensorDataModule, build_datamodule
from kaelab.errors import ConfigError
from kaelab.fileio import optional_output
from kaelab.metrics import write_metrics
from kaelab.models import Classifier
from kaelab.models.classifier import CKPT_KEY
from kaelab.models.positions import PositionView, positions_spec
from kaelab.models.trajectory import Trajectory
from kaelab.precision import resolve_precision
from kaelab.training import (
    adopt_worker_csv,
    build_trainer,
    csv_history,
    fit_progress,
    log_final_metrics,
    log_hyperparams,
    restore_csv_history,
)

log = logging.getLogger(__name__)

FIT_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")
CSVHistory = tuple[list[str], list[dict[str, str]]] | None  # kaelab.training.csv_history


def build_classifier(cfg: DictConfig, dm: TensorDataModule) -> Classifier:
    net = OmegaConf.to_container(cfg.model.net, resolve=True)
    optim = OmegaConf.to_container(cfg.model.optim, resolve=True)
    if net.get("out_dim") is not None and net["out_dim"] != dm.num_classes:
        raise ConfigError(f"model.net.out_dim={net['out_dim']} but the data has {dm.num_classes} classes")
    if net.get("in_dim") is not None and net["in_dim"] != dm.in_dim:
        raise ConfigError(f"model.net.in_dim={net['in_dim']} but the data has {dm.in_dim} features")
    optimizer = OmegaConf.select(cfg, "model.optimizer", default=None)
    scheduler = OmegaConf.select(cfg, "model.scheduler", default=None)
    module = Classifier(
        net=net,
        optim=optim,
        num_classes=dm.num_classes,
        label_smoothing=cfg.model.label_smoothing,
        optimizer=None if optimizer is None else OmegaConf.to_container(optimizer, resolve=True),
        scheduler=None if scheduler is None else OmegaConf.to_container(scheduler, resolve=True),
        scheduler_interval=cfg.model.scheduler_interval,
    )
    check_fits_data(module.net, dm)
    return module


@torch.no_grad()
def check_fits_data(net: torch.nn.Module, dm: TensorDataModule) -> None:
    """Any network: it must take the data's inputs and give one logit per class for each label
    (``[B, C]`` for labels ``[B]``; ``[B, T, C]`` for a sequence's targets ``[B, T]``), checked on
    two training samples, in eval mode, before training."""
    x, y = (t[:2] for t in dm.tensors("train")[:2])
    was_training = net.training
    net.eval()
    try:
        out = net(x)
    except Exception as err:  # a shape mismatch deep inside a user's module: say where it started
        raise ConfigError(
            f"model.net ({type(net).__name__}) cannot take the data's inputs of shape {tuple(x.shape[1:])} "
            f"({type(err).__name__}: {_first_line(err)})"
        ) from None
    finally:
        net.train(was_training)
    if out.shape != (*y.shape, dm.num_classes):
        per = "per sample" if y.dim() == 1 else f"per sample of targets {tuple(y.shape[1:])}"
        raise ConfigError(
            f"model.net ({type(net).__name__}) outputs shape {tuple(out.shape[1:])} {per}, but the data has "
            f"{dm.num_classes} classes (one logit per class expected)"
        )


# what a checkpoint that cannot be read raises: unpickling refused (weights_only) or garbage,
# a truncated zip, a file that is no checkpoint at all
LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, IndexError, KeyError,
               TypeError, AttributeError, ImportError, OSError)  # fmt: skip


def _first_line(err: BaseException, limit: int = 160) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_checkpoint(path: str | Path, what: str) -> dict[str, Any]:
    """A Lightning checkpoint as plain data (``torch.load(weights_only=True)``: a checkpoint that
    would run code when unpickled is refused); any problem is a one-line ConfigError naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}={str(path)!r}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL \S+|WeightsUnpickler error: [^\n]+", str(err))
        reason = found.group(0) if found else _first_line(err)
        raise ConfigError(
            f"{what}={str(path)!r}: refused, not a plain-data checkpoint (loading it would run code, or it is "
            f"not a checkpoint): {reason}"
        ) from None
    except LOAD_ERRORS as err:
        raise ConfigError(
            f"{what}={str(path)!r}: not a readable PyTorch checkpoint ({type(err).__name__}: {_first_line(err)})"
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ConfigError(f"{what}={str(path)!r}: not a Lightning checkpoint of a kaelab base model (no state_dict)")
    return ckpt


def _check_net(cfg: DictConfig, ckpt: dict[str, Any], what: str, path: str | Path) -> None:
    """The checkpoint's network (its saved hyperparameters) must be the one ``model.net`` describes:
    later stages build and name layers from ``model.net``."""
    saved = (ckpt.get("hyper_parameters") or {}).get("net")
    wanted = OmegaConf.to_container(cfg.model.net, resolve=True)
    if not isinstance(saved, dict):
        raise ConfigError(f"{what}={str(path)!r}: not a checkpoint of a kaelab base model (no hyper_parameters.net)")
    if saved != wanted:
        raise ConfigError(f"{what}={str(path)!r} holds the network {saved}, but model.net is {wanted}")


def check_resume(cfg: DictConfig, ckpt_path: str | Path) -> tuple[dict[str, Any], bool]:
    """The resume checkpoint, and whether it records this config's base-model key.

    A checkpoint trained under another config (another seed, data or model) is refused: resuming
    it would train a model that the cache would then hand out under this config's key. One that
    records no key (a ``Classifier`` trained outside the base-model stage, or resumed from such) is
    resumed, but the result is never registered in the cache."""
    ckpt = load_checkpoint(ckpt_path, "ckpt_path")
    _check_net(cfg, ckpt, "ckpt_path", ckpt_path)
    recorded = (ckpt.get(CKPT_KEY) or {}).get("base_model_key") if isinstance(ckpt.get(CKPT_KEY), dict) else None
    expected = base_model_key(cfg)
    if recorded is not None and recorded != expected:
        raise ConfigError(
            f"ckpt_path={str(ckpt_path)!r} was trained under another data/model/trainer config (key {recorded}, "
            f"this run's key is {expected}); resume it with the overrides it was started with"
        )
    return ckpt, recorded == expected


def resolve_last_checkpoint(ckpt_path: str | Path) -> str:
    """``last.ckpt`` is a link to the newest epoch checkpoint; a run killed between saving a new
    epoch checkpoint (and removing the old one) and moving the link leaves it dangling. Resume
    from the newest epoch checkpoint beside it then, and say so."""
    path = Path(ckpt_path)
    if path.is_file() or not path.is_symlink():
        return str(ckpt_path)
    candidates = [p for p in path.parent.glob("epoch=*.ckpt") if p.is_file()]
    pattern = re.compile(r"epoch=(\d+)-step=(\d+)")
    found = [(int(m.group(1)), int(m.group(2)), p) for p in candidates if (m := pattern.match(p.name))]
    if not found:
        return str(ckpt_path)
    newest = max(found)[2]
    log.warning("kaelab: %s points to a removed checkpoint (a run killed mid-save); resuming from %s", path, newest)
    return str(newest)


def fit_classifier(
    cfg: DictConfig,
    out_dir: Path,
    ckpt_path: str | None = None,
    extra_callbacks: Sequence[Callback] = (),
) -> tuple[Classifier, TensorDataModule, L.Trainer, dict[str, Any]]:
    """Fit and test the base model; returns (module, datamodule, trainer, metrics).

    With ``ckpt_path`` the fit resumes from that checkpoint (see ``check_resume``); resumed into
    the same ``out_dir`` its CSV log keeps the epochs before the checkpoint."""
    key_matches, history = True, None
    if ckpt_path is not None:
        ckpt_path, key_matches, history = _resume_from(cfg, out_dir, ckpt_path)
    L.seed_everything(cfg.model.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg.data)
    dm.prepare_data()
    dm.setup()
    module = build_classifier(cfg, dm)
    module.cache_key = base_model_key(cfg) if key_matches else None
    trainer = build_trainer(
        cfg.trainer, out_dir, cfg.model.epochs, extra_callbacks,
        logger=cfg.logger, callbacks=cfg.callbacks, run_name=cfg.name,
    )  # fmt: skip
    restore_csv_history(trainer, history)
    log_hyperparams(trainer, cfg)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    train_time = time.perf_counter() - t0
    if trainer.interrupted:
        raise KeyboardInterrupt
    # the fit's last logged values (trainer.test resets callback_metrics)
    fit_metrics = {k: trainer.callback_metrics[k].item() for k in FIT_KEYS if k in trainer.callback_metrics}
    adopt_worker_csv(trainer)
    _test(cfg, module, dm, trainer)
    metrics: dict[str, Any] = {**module.test_results, **fit_metrics, "train/time_s": train_time}
    metrics["train/epochs"], metrics["train/steps"] = fit_progress(trainer)
    log_final_metrics(trainer, metrics)
    return module, dm, trainer, metrics


def _resume_from(cfg: DictConfig, out_dir: Path, ckpt_path: str) -> tuple[str, bool, CSVHistory]:
    """(the checkpoint to resume, whether it records this config's key, the CSV log rows before it)."""
    ckpt_path = resolve_last_checkpoint(ckpt_path)
    ckpt, key_matches = check_resume(cfg, ckpt_path)
    history = csv_history(out_dir, int(ckpt.get("global_step", 0)))
    if not key_matches:
        log.warning(
            "kaelab: ckpt_path=%s records no config key: resuming it, but the model will not be registered "
            "in the cache",
            ckpt_path,
        )
    return ckpt_path, key_matches, history


def _test(cfg: DictConfig, module: Classifier, dm: TensorDataModule, trainer: L.Trainer) -> None:
    """Test the fitted module (results in ``module.test_results``); under DDP, whose sampler pads
    and splits the test set, once in this process."""
    test_trainer = trainer
    if trainer.world_size > 1:
        test_trainer = L.Trainer(
            accelerator=cfg.trainer.accelerator,
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
    test_trainer.test(module, datamodule=dm, verbose=False)


def train_task(cfg: DictConfig, run_dir: Path, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """``task=train``: fit + test the base model in the run directory.

    The run's metrics.json is written first, then model.ckpt (a full disk there costs a warning and
    ``train/artifact_errors``, not the metrics); then the finished model is also registered in the
    artifact cache (best effort: a cache that fails here costs a warning, not the run), so a KAE
    or DMD stage with the same data + model config reuses it instead of training again.
    ``callbacks`` join the fit's own (a stage that studies the model when the fit ends passes its
    callback here, e.g. ``task=train +dmd=...``).
    """
    module, _, trainer, metrics = fit_classifier(cfg, run_dir, ckpt_path=cfg.ckpt_path, extra_callbacks=callbacks)
    write_metrics(run_dir / "metrics.json", metrics)
    if not cfg.trainer.fast_dev_run:
        ckpt = run_dir / "model.ckpt"  # full: resumable; one that cannot be written: train/artifact_errors
        optional_output(metrics, "train", str(ckpt), lambda: trainer.save_checkpoint(ckpt, weights_only=False))
        if module.cache_key is not None and "train/artifact_errors" not in metrics:
            _register(cfg, run_dir, metrics)
    log.info("test/acc=%.4f test/acc_macro=%.4f", metrics["test/acc"], metrics["test/acc_macro"])
    return metrics


def _register(cfg: DictConfig, run_dir: Path, metrics: dict[str, Any]) -> None:
    def register(tmp: Path) -> None:
        shutil.copy2(run_dir / "model.ckpt", tmp / "model.ckpt")
        write_metrics(tmp / "metrics.json", metrics)

    try:
        ArtifactCache(cfg.paths.cache_dir).get_or_build("base_model", base_model_key(cfg), register, _manifest(cfg))
    except Exception as err:  # the run's own results are written already
        log.warning(
            "kaelab: the model was not registered in the cache %s (%s: %s); this run's results are in %s",
            cfg.paths.cache_dir,
            type(err).__name__,
            _first_line(err),
            run_dir,
        )


@dataclass
class BaseModel:
    """A trained base classifier (eval mode) with its data and the cache key that identifies it."""

    module: Classifier
    datamodule: TensorDataModule
    key: str
    ckpt_path: Path
    metrics: dict[str, Any]
    cache_hit: bool = True  # False when this call trained it
    trajectory_spec: dict[str, Any] | None = None  # model.trajectory (None: the net's own spec)
    positions: dict[str, int] | None = None  # model.positions (None: one sample per input)

    @property
    def net(self) -> torch.nn.Module:
        return self.module.net

    @functools.cached_property
    def readout(self) -> torch.nn.Module:
        """How stages read the network at their samples: the trajectory (logits per input, the
        rest of the network from any state), or with ``positions`` its ``PositionView`` (logits per
        token position, the position-wise head from the last state)."""
        if self.positions is None:
            return self.trajectory
        return PositionView.of(self.trajectory, self.datamodule.tensors("train")[0][:2])

    @functools.cached_property
    def trajectory(self) -> Trajectory:
        """The network as states through depth (kaelab/models/trajectory.py), checked on two
        training samples; what every downstream stage runs the network through."""
        return Trajectory.of(self.net, self.datamodule.tensors("train")[0][:2], self.trajectory_spec)


def _manifest(cfg: DictConfig) -> dict[str, Any]:
    return {
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
    }


def base_model_key(cfg: DictConfig) -> str:
    if cfg.model.checkpoint:
        return config_key("checkpoint", file_digest(cfg.model.checkpoint))
    data = OmegaConf.to_container(cfg.data, resolve=True)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(data, dict) and isinstance(model, dict)
    # where the files live, whether they may be downloaded and the evaluation batch size don't change the model
    for k in ("eval_batch_size", "root", "download"):
        data.pop(k, None)
    model.pop("checkpoint", None)
    model.pop("trajectory", None)  # how the trained net is read, not what is trained
    model.pop("positions", None)
    return config_key("base_model", data, model, trainer_key_settings(cfg))


def trajectory_spec(cfg: DictConfig) -> dict[str, Any] | None:
    """``model.trajectory`` as a plain dict (None: the network's own ``trajectory_spec()``)."""
    node = OmegaConf.select(cfg, "model.trajectory", default=None)
    return None if node is None else OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def trainer_key_settings(cfg: DictConfig) -> list[Any]:
    """Trainer settings that change what gets trained (a fast_dev_run model must not pass for a
    real one); part of the cache key of every trained artifact."""
    tc = cfg.trainer
    precision = resolve_precision(tc.precision, str(tc.accelerator))  # what trains, not what was asked
    settings = [precision, tc.fast_dev_run, tc.limit_train_batches, tc.gradient_clip_val]
    if "ddp" in str(tc.strategy) or tc.num_nodes != 1:  # several processes: a larger global batch
        settings.append({"strategy": tc.strategy, "devices": tc.devices, "num_nodes": tc.num_nodes})
    return settings


def base_model(cfg: DictConfig, work_dir: Path) -> BaseModel:
    """The trained base model for ``cfg``: from ``model.checkpoint``, the cache, or trained now.

    Training logs go to ``work_dir``; the checkpoint and its test metrics go to the cache. A cached
    model that cannot be loaded is rebuilt (kaelab.cache); a ``model.checkpoint`` that cannot be
    loaded is a one-line error.
    """
    if cfg.model.checkpoint:
        ckpt = Path(cfg.model.checkpoint)
        # plain data, readable, a Lightning checkpoint of the network model.net describes
        _check_net(cfg, load_checkpoint(ckpt, "model.checkpoint"), "model.checkpoint", ckpt)
    dm = build_datamodule(cfg.data)
    dm.prepare_data()
    dm.setup()
    key = base_model_key(cfg)
    if cfg.model.checkpoint:
        module, metrics, cache_hit = _given_classifier(ckpt), {}, True
    else:
        module, metrics, cache_hit = _cached_classifier(cfg, key, work_dir)
        ckpt = ArtifactCache(cfg.paths.cache_dir).path("base_model", key) / "model.ckpt"
    module.eval()
    return BaseModel(
        module=module,
        datamodule=dm,
        key=key,
        ckpt_path=ckpt,
        metrics=metrics,
        cache_hit=cache_hit,
        trajectory_spec=trajectory_spec(cfg),
        positions=positions_spec(OmegaConf.select(cfg, "model.positions", default=None)),
    )


def _given_classifier(ckpt: Path) -> Classifier:
    """The classifier of a ``model.checkpoint``; one that does not load is a one-line error."""
    try:
        return _load_classifier(ckpt)
    except LOAD_ERRORS as err:  # e.g. another architecture than model.net
        raise ConfigError(
            f"model.checkpoint={str(ckpt)!r}: does not load as this config's model.net ({_first_line(err)})"
        ) from None


def _cached_classifier(cfg: DictConfig, key: str, work_dir: Path) -> tuple[Classifier, dict[str, Any], bool]:
    """(classifier, its metrics, whether it came from the cache): the cache's entry ``key``, trained
    now (logs in ``work_dir``) if it is missing or cannot be loaded."""
    trained = False

    def build(tmp: Path) -> None:
        nonlocal trained
        trained = True
        _, _, trainer, m = fit_classifier(cfg, work_dir)
        trainer.save_checkpoint(tmp / "model.ckpt", weights_only=False)
        write_metrics(tmp / "metrics.json", m)

    def load(path: Path) -> tuple[Classifier, dict[str, Any]]:
        metrics = json.loads((path / "metrics.json").read_text())
        if not isinstance(metrics, dict):
            raise ValueError("metrics.json is not a JSON object")
        return _load_classifier(path / "model.ckpt"), metrics

    module, metrics = ArtifactCache(cfg.paths.cache_dir).load("base_model", key, build, load, _manifest(cfg))
    return module, metrics, not trained


def _load_classifier(ckpt: Path) -> Classifier:
    return Classifier.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True)
