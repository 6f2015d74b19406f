"""Typed config schema (Hydra ConfigStore). Every YAML file in ``conf/`` extends one of these.

A wrong type or an unknown key fails when Hydra composes the config, before any work starts.
Stage configs (``kae``, ``dmd``) live next to the code that reads them and are registered here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from kaelab.errors import ConfigError, check_choice


# ---------------------------------------------------------------------------------------------- data
@dataclass
class YinYangDataConfig:
    _target_: str = "kaelab.data.YinYangDataModule"  # built by hydra.utils.instantiate (minus ``name``)
    name: str = "yinyang"
    n_train: int = 5000
    n_val: int = 1000
    n_test: int = 1000
    seed_train: int = 42
    seed_val: int = 41
    seed_test: int = 40
    features: str = "xy"  # xy | xy_mirror (x, y, 1-x, 1-y)
    binary: bool = False  # DMD paper's variant: dots removed, 2 classes
    r_small: float = 0.1
    r_big: float = 0.5
    batch_size: int = 512
    eval_batch_size: int = 4096
    shuffle_seed: int = "${model.seed}"  # type: ignore[assignment]
    exclude_classes: list[int] = field(default_factory=list)  # left out of train/val (retrain baseline)


@dataclass
class MNISTDataConfig:
    _target_: str = "kaelab.data.MNISTDataModule"
    name: str = "mnist"
    root: str = "${paths.data_dir}"
    download: bool = True  # torchvision download when the files are missing (needs internet)
    val_size: int = 5000  # carved from the 60k training images
    split_seed: int = 0
    batch_size: int = 128
    eval_batch_size: int = 4096
    shuffle_seed: int = "${model.seed}"  # type: ignore[assignment]
    augment_shift: int = 0  # random translations of training images by up to this many pixels
    exclude_classes: list[int] = field(default_factory=list)  # left out of train/val (retrain baseline)


# --------------------------------------------------------------------------------------------- model
@dataclass
class OptimConfig:
    """SGD with momentum and a one-cycle triangular LR (0 -> lr over warmup_frac -> 0)."""

    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    warmup_frac: float = 0.2


@dataclass
class ModelConfig:
    # the network: a ``_target_`` config, built by hydra.utils.instantiate (kaelab/models/factory.py);
    # its arguments are checked against the target's signature before any work starts
    net: Any = MISSING
    # which modules form the network's trajectory through depth (kaelab/models/trajectory.py):
    # {stages: [module paths whose outputs are the states, in order; "blocks.*" = the children of
    # blocks], head: module mapping the last state to the logits}; null: the network's own
    # trajectory_spec() (kaelab's ResMLP and MLP have one). Untyped so that a command-line
    # `model.trajectory={stages: [...], head: ...}` can set it; checked in check_values.
    trajectory: Any = None
    # a ``_partial_: true`` optimizer config (e.g. torch.optim.AdamW) called on the parameter groups
    # (weight decay on Linear weights only); its lr is the one-cycle schedule's peak. null: SGD from
    # ``optim`` (the papers' recipe)
    optimizer: Any = None
    # a ``_partial_: true`` LR-scheduler config (e.g. torch.optim.lr_scheduler.CosineAnnealingLR)
    # called on the optimizer, plus ``total_steps`` when its target takes one; stepped every
    # ``scheduler_interval`` (step | epoch). null: the papers' one-cycle triangular LR
    # (kaelab.schedules.triangular_lr with ``optim.warmup_frac``)
    scheduler: Any = None
    scheduler_interval: str = "step"
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = MISSING
    label_smoothing: float = 0.0
    seed: int = "${seed}"  # type: ignore[assignment]  # base model's seed (KAE experiments fix it)
    checkpoint: Optional[str] = None  # use this trained base model instead of training one


# ----------------------------------------------------------------------------------------- runtime
@dataclass
class TrainerConfig:
    """Lightning Trainer settings that do not change what is trained (epochs live in the stages)."""

    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    deterministic: bool = False
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 50
    fast_dev_run: Any = False
    limit_train_batches: Optional[float] = None
    limit_val_batches: Optional[float] = None
    limit_test_batches: Optional[float] = None
    num_sanity_val_steps: int = 0
    gradient_clip_val: Optional[float] = None
    num_threads: Optional[int] = None  # torch intra-op threads (None: torch's default)


@dataclass
class WandbConfig:
    mode: str = "offline"  # online | offline | disabled
    project: str = "kaelab"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    log_model: bool = False


@dataclass
class LoggerConfig:
    csv: bool = True
    tensorboard: bool = False
    wandb: Optional[WandbConfig] = None
    # more loggers, by name, each a _target_ config (conf/logger/extra/*.yaml, +logger/extra=NAME);
    # one whose class takes save_dir gets the stage's log dir unless it sets its own
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CallbacksConfig:
    checkpoint: bool = True  # ModelCheckpoint writing last.ckpt every epoch (for resume)
    checkpoint_every_n_epochs: int = 1
    progress_bar: str = "tqdm"  # tqdm | rich | none
    progress_refresh_rate: int = 10
    lr_monitor: bool = True
    # more callbacks, by name, each a _target_ config (conf/callbacks/extra/*.yaml,
    # +callbacks/extra=NAME), e.g. EarlyStopping; added to every stage's Trainer
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PathsConfig:
    data_dir: str = "${oc.env:KAELAB_DATA_DIR,data}"
    output_root: str = "${oc.env:KAELAB_OUTPUT_DIR,outputs}"
    cache_dir: str = "${oc.env:KAELAB_CACHE_DIR,${paths.output_root}/cache}"
    run_dir: str = "${hydra:runtime.output_dir}"


# ------------------------------------------------------------------------------------------- root
TASKS = ("train", "kae", "dmd", "edit", "topology", "spectrum")


@dataclass
class Config:
    name: str = "default"  # experiment name: names the run directory and logger runs
    task: str = "train"  # train | kae | dmd | edit | topology | spectrum
    seed: int = 0
    ckpt_path: Optional[str] = None  # resume the base-model training run from this checkpoint
    # the metrics.json key a run returns to a Hydra sweeper that optimises (hydra/sweeper=optuna):
    # a validation or training metric (e.g. kae/val_acc), never a test one
    optimized_metric: Optional[str] = None
    data: Any = MISSING
    model: ModelConfig = MISSING  # type: ignore[assignment]
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    kae: Any = None
    dmd: Any = None
    edit: Any = None
    topology: Any = None


def gpu_count() -> int:
    """Visible CUDA devices (resolver ``${kaelab_gpu_count:}``)."""
    import torch

    return torch.cuda.device_count()


def hydra_job_num() -> int:
    """This job's index in a multirun (0 in a single run or outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        num = OmegaConf.select(HydraConfig.get(), "job.num", default=0)
    except ValueError:  # HydraConfig not set (compose API)
        return 0
    return int(num) if isinstance(num, int) else 0


def gpu_for_job() -> list[int]:
    """``[job.num % n_gpus]`` (resolver ``${kaelab_gpu_for_job:}``): with the joblib_gpus
    launcher, multirun job n trains on GPU n mod the number of visible GPUs."""
    n = gpu_count()
    if n == 0:
        raise ConfigError("trainer=gpu needs a CUDA GPU and none is visible (use trainer=cpu)")
    return [hydra_job_num() % n]


def register_configs() -> None:
    for name, fn in (("kaelab_gpu_count", gpu_count), ("kaelab_gpu_for_job", gpu_for_job)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    # Hydra finds launcher plugins by walking the hydra_plugins namespace's __path__, which a PEP 660
    # editable install (make setup) does not expose: register kaelab's launcher explicitly (importing
    # it also stores its config schema, hydra/launcher/slots_schema).
    from hydra.core.plugins import Plugins

    from hydra_plugins.kaelab_launcher.slots_launcher import SlotsLauncher
    from kaelab.dmd.config import DMDConfig
    from kaelab.editing.config import EditConfig
    from kaelab.koopman.config import KAEConfig
    from kaelab.topology.config import TopologyConfig

    Plugins.instance().register(SlotsLauncher)

    cs = ConfigStore.instance()
    cs.store(group="edit", name="edit_schema", node=EditConfig)
    cs.store(group="kae", name="kae_schema", node=KAEConfig)
    cs.store(group="dmd", name="dmd_schema", node=DMDConfig)
    cs.store(group="topology", name="topology_schema", node=TopologyConfig)
    cs.store(name="config_schema", node=Config)
    cs.store(group="data", name="yinyang_schema", node=YinYangDataConfig)
    cs.store(group="data", name="mnist_schema", node=MNISTDataConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    cs.store(group="callbacks", name="callbacks_schema", node=CallbacksConfig)
    cs.store(group="paths", name="paths_schema", node=PathsConfig)


def check_schema(cfg: Any, path: str = "") -> None:
    """Reject keys that are not fields of their node's schema dataclass.

    Hydra's struct mode already rejects ``key=value`` for unknown keys, but ``+key=value`` appends
    past it; this catches those before any work starts.
    """
    if isinstance(cfg, DictConfig):
        schema = OmegaConf.get_type(cfg)
        if schema is not None and dataclasses.is_dataclass(schema):
            known = {f.name for f in dataclasses.fields(schema)}
            for key in cfg.keys():
                if key not in known:
                    raise ConfigError(
                        f"unknown config key {path}{key} (not in {schema.__name__}: {', '.join(sorted(known))})"
                    )
        for key in cfg.keys():
            if key != "hydra":
                check_schema(cfg._get_node(key), f"{path}{key}.")
    elif isinstance(cfg, ListConfig):
        for idx in range(len(cfg)):
            check_schema(cfg._get_node(idx), f"{path}{idx}.")


def check_values(cfg: DictConfig) -> None:
    """Reject values that are well-typed but invalid, before any work starts (one-line ConfigError)."""

    def at_least(key: str, low: float) -> None:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:  # not set (optional) or not part of this config
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            raise ConfigError(f"{key}={value} must be >= {low}")

    def within(key: str, low: float, high: float) -> None:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not low <= value < high:
            raise ConfigError(f"{key}={value} must be in [{low}, {high})")

    from kaelab.instantiate import check_target, logger_needs_dir

    for group in ("callbacks", "logger"):  # a bad _target_ or argument fails here, before any work
        for name, node in (OmegaConf.select(cfg, f"{group}.extra", default=None) or {}).items():
            if node is not None:
                given = {"save_dir": "."} if group == "logger" and logger_needs_dir(node) else {}
                check_target(node, f"{group}.extra.{name}", **given)

    task = cfg.task
    metric = OmegaConf.select(cfg, "optimized_metric", default=None)
    if metric is not None and "test" in str(metric).split("/")[-1]:
        raise ConfigError(
            f"optimized_metric={metric} is a test metric: a search must select on validation data "
            "(e.g. kae/val_acc, val/acc), and the test split reports the selected run"
        )
    if cfg.ckpt_path and task != "train":
        raise ConfigError(
            f"ckpt_path resumes a task=train run; task={task} does not use it (a trained base model is given "
            "with model.checkpoint=PATH)"
        )
    if OmegaConf.select(cfg, "model.checkpoint") and task == "train":
        raise ConfigError(
            "model.checkpoint gives a trained base model to task=kae|dmd|edit|topology|spectrum; task=train trains one "
            "(resume an interrupted one with ckpt_path=PATH)"
        )
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu"))
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={accelerator} needs a CUDA GPU, none is visible (use trainer=cpu)")
    for key in ("model.epochs", "data.batch_size", "data.eval_batch_size", "data.n_train", "data.n_test"):
        at_least(key, 1)
    for key in ("trainer.num_threads", "trainer.check_val_every_n_epoch", "trainer.log_every_n_steps"):
        at_least(key, 1)
    for key in ("callbacks.checkpoint_every_n_epochs", "callbacks.progress_refresh_rate"):
        at_least(key, 1)
    for key in ("model.net.in_dim", "model.net.out_dim", "model.net.width", "model.net.n_blocks"):
        at_least(key, 1)
    for key in ("model.optim.momentum", "model.optim.weight_decay", "data.augment_shift", "data.n_val"):
        at_least(key, 0)
    if OmegaConf.select(cfg, "model.optim.lr", default=1.0) <= 0:
        raise ConfigError(f"model.optim.lr={cfg.model.optim.lr} must be > 0")
    within("model.label_smoothing", 0.0, 1.0)
    within("model.optim.momentum", 0.0, 1.0)
    if not 0.0 < OmegaConf.select(cfg, "model.optim.warmup_frac", default=0.5) < 1.0:
        raise ConfigError(f"model.optim.warmup_frac={cfg.model.optim.warmup_frac} must be in (0, 1)")
    from kaelab.models.factory import check_net_config

    check_net_config(OmegaConf.to_container(cfg.model.net, resolve=True))
    traj = OmegaConf.select(cfg, "model.trajectory", default=None)
    if traj is not None and (
        not isinstance(traj, DictConfig)
        or set(traj.keys()) != {"stages", "head"}
        or not OmegaConf.is_list(traj.stages)
        or not isinstance(traj.head, str)
    ):
        raise ConfigError(
            "model.trajectory must be {stages: [module paths], head: module path}, got "
            f"{OmegaConf.to_container(traj) if OmegaConf.is_config(traj) else traj!r}"
        )
    from kaelab.instantiate import check_target, takes_argument  # objects built from _target_ configs

    if OmegaConf.select(cfg, "model.optimizer", default=None) is not None:
        if not cfg.model.optimizer.get("_partial_"):
            raise ConfigError("model.optimizer needs _partial_: true (kaelab passes the parameter groups)")
        check_target(cfg.model.optimizer, "model.optimizer")
    check_choice(cfg.model.scheduler_interval, ("step", "epoch"), "model.scheduler_interval")
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if isinstance(data, dict) and "_target_" in data:  # the datamodule's arguments, before any work
        data.pop("name", None)
        check_target(data, "data")
    if OmegaConf.select(cfg, "model.scheduler", default=None) is not None:
        node = cfg.model.scheduler
        if not node.get("_partial_"):
            raise ConfigError("model.scheduler needs _partial_: true (kaelab passes the optimizer)")
        extra = {"total_steps": 1} if takes_argument(node, "total_steps") else {}
        check_target(node, "model.scheduler", **extra)
    hidden = OmegaConf.select(cfg, "model.net.hidden", default=None)
    if hidden is not None and (len(hidden) == 0 or min(hidden) < 1):
        raise ConfigError(f"model.net.hidden={list(hidden)} must list widths >= 1")
    out_dim = OmegaConf.select(cfg, "model.net.out_dim", default=None)
    excluded = OmegaConf.select(cfg, "data.exclude_classes", default=None) or []
    for c in excluded:
        if out_dim is not None and not 0 <= c < out_dim:
            raise ConfigError(f"data.exclude_classes={list(excluded)}: class {c} is not in [0, {out_dim})")
    if out_dim is not None and len(set(excluded)) >= out_dim:
        raise ConfigError(f"data.exclude_classes={list(excluded)} leaves no class to train on")
    val_size = OmegaConf.select(cfg, "data.val_size", default=None)
    if val_size is not None and not 0 <= val_size < 60000:
        raise ConfigError(f"data.val_size={val_size} must be in [0, 60000) (carved from the 60,000 MNIST images)")
