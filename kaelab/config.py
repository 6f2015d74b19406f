"""Typed config schema (Hydra ConfigStore). Every YAML file in ``conf/`` extends one of these.

A wrong type or an unknown key fails when Hydra composes the config, before any work starts.
Stage configs (``kae``, ``dmd``) live next to the code that reads them and are registered here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from kaelab.errors import ConfigError, check_choice, writable_dir_problem


# ---------------------------------------------------------------------------------------------- data
@dataclass
class YinYangDataConfig:
    _target_: str = "kaelab.data.YinYangDataModule"  # built by hydra.utils.instantiate (minus ``name``)
    # the dataset's name (run directory names, messages); not passed to the datamodule
    name: str = "yinyang"
    # training samples generated
    n_train: int = 5000
    # validation samples generated
    n_val: int = 1000
    # test samples generated
    n_test: int = 1000
    # seed of the generated training split
    seed_train: int = 42
    # seed of the generated validation split
    seed_val: int = 41
    # seed of the generated test split
    seed_test: int = 40
    features: str = "xy"  # xy | xy_mirror (x, y, 1-x, 1-y)
    binary: bool = False  # DMD paper's variant: dots removed, 2 classes
    # radius of the two dots of the Yin-Yang figure
    r_small: float = 0.1
    # radius of the whole Yin-Yang disc (points lie in [0, 2 r_big]^2)
    r_big: float = 0.5
    # training batch size
    batch_size: int = 512
    # batch size of validation, test and representation extraction
    eval_batch_size: int = 4096
    # seed of the epoch-seeded shuffling of training batches (default: the base model's seed)
    shuffle_seed: int = "${model.seed}"  # type: ignore[assignment]
    exclude_classes: list[int] = field(default_factory=list)  # left out of train/val (retrain baseline)


@dataclass
class MNISTDataConfig:
    # the datamodule class, built by hydra.utils.instantiate (minus ``name``)
    _target_: str = "kaelab.data.MNISTDataModule"
    # the dataset's name (run directory names, messages); not passed to the datamodule
    name: str = "mnist"
    # directory holding MNIST/raw/ (the four idx files)
    root: str = "${paths.data_dir}"
    download: bool = True  # torchvision download when the files are missing (needs internet)
    val_size: int = 5000  # carved from the 60k training images
    # seed of the random split of the 60k training images into train and validation
    split_seed: int = 0
    # training batch size
    batch_size: int = 128
    # batch size of validation, test and representation extraction
    eval_batch_size: int = 4096
    # seed of the epoch-seeded shuffling of training batches (default: the base model's seed)
    shuffle_seed: int = "${model.seed}"  # type: ignore[assignment]
    augment_shift: int = 0  # random translations of training images by up to this many pixels
    exclude_classes: list[int] = field(default_factory=list)  # left out of train/val (retrain baseline)


# --------------------------------------------------------------------------------------------- model
@dataclass
class OptimConfig:
    """SGD with momentum and a one-cycle triangular LR (0 -> lr over warmup_frac -> 0)."""

    # peak learning rate of the one-cycle schedule
    lr: float = 0.1
    # SGD momentum
    momentum: float = 0.9
    # Nesterov momentum
    nesterov: bool = False
    # weight decay, on Linear weights only
    weight_decay: float = 5e-4
    # fraction of the steps over which the learning rate rises from 0 to lr
    warmup_frac: float = 0.2


@dataclass
class PositionsConfig:
    """Token positions as samples of a sequence model (kaelab/models/positions.py): every stage
    reads the states ``[B, tokens, dim]`` one position at a time, labelled by that position's target."""

    # positions drawn per window of every split, uniformly among those with a target (!= -100)
    per_window: int = 8
    # seed of the draw (one torch.Generator per split): the same seed gives the same positions in every stage
    seed: int = 0


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
    # token positions as samples (a sequence model, states [B, tokens, dim]): {per_window, seed};
    # null: one sample per input. How the trained net is read, not what is trained (not in the
    # base model's cache key; in the representations')
    positions: Optional[PositionsConfig] = None
    # a ``_partial_: true`` optimizer config (e.g. torch.optim.AdamW) called on the parameter groups
    # (weight decay on Linear weights only); its lr is the one-cycle schedule's peak. null: SGD from
    # ``optim`` (the papers' recipe)
    optimizer: Any = None
    # a ``_partial_: true`` LR-scheduler config (e.g. torch.optim.lr_scheduler.CosineAnnealingLR)
    # called on the optimizer, plus ``total_steps`` when its target takes one; stepped every
    # ``scheduler_interval`` (step | epoch). null: the papers' one-cycle triangular LR
    # (kaelab.schedules.triangular_lr with ``optim.warmup_frac``)
    scheduler: Any = None
    # how often ``scheduler`` steps: step | epoch
    scheduler_interval: str = "step"
    # the papers' SGD recipe (used when ``optimizer`` is null)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # training epochs of the base model
    epochs: int = MISSING
    # label smoothing of the base model's cross-entropy loss, in [0, 1)
    label_smoothing: float = 0.0
    seed: int = "${seed}"  # type: ignore[assignment]  # base model's seed (KAE experiments fix it)
    checkpoint: Optional[str] = None  # use this trained base model instead of training one


# ----------------------------------------------------------------------------------------- runtime
@dataclass
class TrainerConfig:
    """Lightning Trainer settings that do not change what is trained (epochs live in the stages)."""

    # Lightning accelerator: cpu | gpu (trainer=gpu)
    accelerator: str = "cpu"
    # devices per node: a count, a list of device indices, or auto
    devices: Any = 1
    # Lightning strategy: auto | ddp_spawn (trainer=ddp, trainer=ddp_cpu)
    strategy: str = "auto"
    # nodes of a multi-node run
    num_nodes: int = 1
    # Lightning precision: 32-true | bf16-mixed | 16-mixed | ..., or auto: bf16-mixed where the
    # hardware multiplies bf16 natively (detected), else 32-true (kaelab/precision.py); the resolved
    # value keys the cache
    precision: str = "32-true"
    # torch's deterministic algorithms (slower; bitwise repeatable on GPU)
    deterministic: bool = False
    # validate every this many epochs
    check_val_every_n_epoch: int = 1
    # log training metrics every this many steps
    log_every_n_steps: int = 50
    # Lightning's smoke test: true (1 batch) or n batches per loop; such models are never cached
    fast_dev_run: Any = False
    # fraction (float) or count (int) of training batches per epoch (None: all)
    limit_train_batches: Optional[float] = None
    # fraction or count of validation batches (None: all)
    limit_val_batches: Optional[float] = None
    # fraction or count of test batches (None: all)
    limit_test_batches: Optional[float] = None
    # validation batches run before training starts
    num_sanity_val_steps: int = 0
    # gradient-norm clipping of the base model's training (None: off)
    gradient_clip_val: Optional[float] = None
    num_threads: Optional[int] = None  # torch intra-op threads (None: torch's default)


@dataclass
class PathsConfig:
    # where datasets are read (MNIST: <data_dir>/MNIST/raw): $KAELAB_DATA_DIR, else ./data
    data_dir: str = "${oc.env:KAELAB_DATA_DIR,data}"
    # root of runs/, multirun/ and the cache: $KAELAB_OUTPUT_DIR, else ./outputs
    output_root: str = "${oc.env:KAELAB_OUTPUT_DIR,outputs}"
    # the content-addressed artifact cache: $KAELAB_CACHE_DIR, else <output_root>/cache
    cache_dir: str = "${oc.env:KAELAB_CACHE_DIR,${paths.output_root}/cache}"
    # this run's directory (Hydra's output dir): metrics.json, logs, figures
    run_dir: str = "${hydra:runtime.output_dir}"


# ------------------------------------------------------------------------------------------- root
TASKS = ("train", "kae", "dmd", "edit", "topology", "spectrum")


@dataclass
class Config:
    name: str = "default"  # experiment name: names the run directory and logger runs
    task: str = "train"  # train | kae | dmd | edit | topology | spectrum
    # global seed: the KAE, DMD fits, subsamples, and the base model unless model.seed is fixed
    seed: int = 0
    ckpt_path: Optional[str] = None  # resume the base-model training run from this checkpoint
    # the metrics.json key a run returns to a Hydra sweeper that optimises (hydra/sweeper=optuna):
    # a validation or training metric (e.g. kae/val_acc), never a test one
    optimized_metric: Optional[str] = None
    # the dataset: a _target_ datamodule config (conf/data/*.yaml)
    data: Any = MISSING
    # the base model: network, trajectory, optimiser, epochs (conf/model/*.yaml)
    model: ModelConfig = MISSING  # type: ignore[assignment]
    # Lightning Trainer settings (conf/trainer/*.yaml)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # the loggers and callbacks of every stage, by name, each a ``_target_`` config built with
    # hydra.utils.instantiate (conf/logger/*.yaml, conf/callbacks/*.yaml); null or ``~logger.NAME``
    # removes one. kaelab fills in, per stage, the arguments a target takes and its config leaves
    # unset: a logger's ``save_dir`` and ``name``, a callback's ``dirpath`` (kaelab.training)
    logger: dict[str, Any] = field(default_factory=dict)
    # named Lightning callbacks of every stage, each a _target_ config (conf/callbacks/*.yaml)
    callbacks: dict[str, Any] = field(default_factory=dict)
    # where data, runs and the cache live (conf/paths/default.yaml)
    paths: PathsConfig = field(default_factory=PathsConfig)
    # the KAE stage (conf/kae/*.yaml): task=kae, and the KAE of task=edit|topology|spectrum
    kae: Any = None
    # the DMD stage (conf/dmd/*.yaml): task=dmd, or +dmd=NAME on a training run
    dmd: Any = None
    # the edit stage (conf/edit/*.yaml): task=edit
    edit: Any = None
    # the topology stage (conf/topology/*.yaml): task=topology
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


# ------------------------------------------------------------------------------------------ checks
def check_values(cfg: DictConfig) -> None:
    """Reject values that are well-typed but invalid, before any work starts, with a one-line
    ConfigError naming the key: the whole config's floats, then each group's own check (the stage
    groups' next to their schemas, in their packages). ``kaelab.pipeline.run`` calls it once a run."""
    check_finite(cfg)
    check_run_values(cfg)
    check_trainer_values(cfg.trainer)
    check_data_values(cfg.data, OmegaConf.select(cfg, "model.net.out_dim", default=None))
    check_model_values(cfg.model)
    check_logger_values(cfg.logger)
    check_callbacks_values(cfg.callbacks)
    check_paths_values(cfg.paths)
    check_stage_values(cfg)


def check_finite(node: Any, where: str = "") -> None:
    """Refuse a nan or inf anywhere in the resolved config (every group, nested keys, list items)."""
    if isinstance(node, DictConfig):
        children = [(f"{where}.{k}" if where else str(k), k) for k in node.keys() if where or k != "hydra"]
    elif isinstance(node, ListConfig):
        children = [(f"{where}[{i}]", i) for i in range(len(node))]
    else:
        return
    for key, index in children:
        try:
            value = node[index]
        except Exception:  # ??? or an interpolation only Hydra's runtime resolves: not a number here
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value} must be a finite number")
        check_finite(value, key)


def _at_least(node: Any, group: str, key: str, low: float) -> None:
    value = OmegaConf.select(node, key, default=None)
    if value is None:  # not set (optional) or not part of this config
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
        raise ConfigError(f"{group}.{key}={value} must be >= {low}")


def _within(node: Any, group: str, key: str, low: float, high: float) -> None:
    value = OmegaConf.select(node, key, default=None)
    if value is not None and not low <= value < high:
        raise ConfigError(f"{group}.{key}={value} must be in [{low}, {high})")


def check_run_values(cfg: DictConfig) -> None:
    """The root keys: task, optimized_metric, ckpt_path against model.checkpoint."""
    check_choice(cfg.task, TASKS, "task")
    metric = OmegaConf.select(cfg, "optimized_metric", default=None)
    if metric is not None and "test" in str(metric).split("/")[-1]:
        raise ConfigError(
            f"optimized_metric={metric} is a test metric: a search must select on validation data "
            "(e.g. kae/val_acc, val/acc), and the test split reports the selected run"
        )
    if cfg.ckpt_path and cfg.task != "train":
        raise ConfigError(
            f"ckpt_path resumes a task=train run; task={cfg.task} does not use it (a trained base model is given "
            "with model.checkpoint=PATH)"
        )
    if OmegaConf.select(cfg, "model.checkpoint") and cfg.task == "train":
        raise ConfigError(
            "model.checkpoint gives a trained base model to task=kae|dmd|edit|topology|spectrum; task=train trains one "
            "(resume an interrupted one with ckpt_path=PATH)"
        )


def check_trainer_values(trainer: DictConfig) -> None:
    """The ``trainer`` group: counts >= 1, a known precision, and a GPU when one is asked for."""
    from kaelab.precision import PRECISIONS

    for key in ("num_threads", "check_val_every_n_epoch", "log_every_n_steps"):
        _at_least(trainer, "trainer", key, 1)
    check_choice(str(OmegaConf.select(trainer, "precision", default="32-true")), PRECISIONS, "trainer.precision")
    accelerator = str(OmegaConf.select(trainer, "accelerator", default="cpu"))
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={accelerator} needs a CUDA GPU, none is visible (use trainer=cpu)")


def check_data_values(data: DictConfig, n_classes: Optional[int] = None) -> None:
    """The ``data`` group: sizes, the classes left out (of ``n_classes``), the datamodule's arguments."""
    for key in ("batch_size", "eval_batch_size", "n_train", "n_test"):
        _at_least(data, "data", key, 1)
    for key in ("augment_shift", "n_val"):
        _at_least(data, "data", key, 0)
    val_size = OmegaConf.select(data, "val_size", default=None)
    if val_size is not None and not 0 <= val_size < 60000:
        raise ConfigError(f"data.val_size={val_size} must be in [0, 60000) (carved from the 60,000 MNIST images)")
    excluded = OmegaConf.select(data, "exclude_classes", default=None) or []
    for c in excluded:
        if n_classes is not None and not 0 <= c < n_classes:
            raise ConfigError(f"data.exclude_classes={list(excluded)}: class {c} is not in [0, {n_classes})")
    if n_classes is not None and len(set(excluded)) >= n_classes:
        raise ConfigError(f"data.exclude_classes={list(excluded)} leaves no class to train on")
    from kaelab.instantiate import check_target

    spec = OmegaConf.to_container(data, resolve=True)
    if isinstance(spec, dict) and "_target_" in spec:  # the datamodule's arguments, before any work
        spec.pop("name", None)
        check_target(spec, "data")


def check_model_values(model: DictConfig) -> None:
    """The ``model`` group: the recipe's ranges, then the objects built from its ``_target_`` configs."""
    _at_least(model, "model", "epochs", 1)
    for key in ("net.in_dim", "net.out_dim", "net.width", "net.n_blocks"):
        _at_least(model, "model", key, 1)
    for key in ("optim.momentum", "optim.weight_decay"):
        _at_least(model, "model", key, 0)
    if OmegaConf.select(model, "optim.lr", default=1.0) <= 0:
        raise ConfigError(f"model.optim.lr={model.optim.lr} must be > 0")
    _within(model, "model", "label_smoothing", 0.0, 1.0)
    _within(model, "model", "optim.momentum", 0.0, 1.0)
    if not 0.0 < OmegaConf.select(model, "optim.warmup_frac", default=0.5) < 1.0:
        raise ConfigError(f"model.optim.warmup_frac={model.optim.warmup_frac} must be in (0, 1)")
    hidden = OmegaConf.select(model, "net.hidden", default=None)
    if hidden is not None and (len(hidden) == 0 or min(hidden) < 1):
        raise ConfigError(f"model.net.hidden={list(hidden)} must list widths >= 1")
    traj = OmegaConf.select(model, "trajectory", default=None)
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
    _at_least(model, "model", "positions.per_window", 1)
    check_choice(model.scheduler_interval, ("step", "epoch"), "model.scheduler_interval")
    check_model_objects(model)


def check_model_objects(model: DictConfig) -> None:
    """The network, optimizer and LR scheduler ``_target_`` configs fit their targets' signatures."""
    from kaelab.instantiate import check_target, takes_argument
    from kaelab.models.factory import check_net_config

    check_net_config(OmegaConf.to_container(model.net, resolve=True))
    if OmegaConf.select(model, "optimizer", default=None) is not None:
        if not model.optimizer.get("_partial_"):
            raise ConfigError("model.optimizer needs _partial_: true (kaelab passes the parameter groups)")
        check_target(model.optimizer, "model.optimizer")
    if OmegaConf.select(model, "scheduler", default=None) is not None:
        node = model.scheduler
        if not node.get("_partial_"):
            raise ConfigError("model.scheduler needs _partial_: true (kaelab passes the optimizer)")
        extra = {"total_steps": 1} if takes_argument(node, "total_steps") else {}
        check_target(node, "model.scheduler", **extra)


# what kaelab fills in per stage when a target takes it and its config leaves it unset (kaelab.training)
LOGGER_FILLED = ("save_dir", "name")
CALLBACK_FILLED = ("dirpath",)


def check_logger_values(logger: Any) -> None:
    """The ``logger`` group: named ``_target_`` configs (or null), each fitting its target's
    signature once kaelab gives it the stage's ``save_dir`` and ``name``; a W&B ``mode`` kaelab knows."""
    from kaelab.dashboards import WANDB_MODES
    from kaelab.instantiate import check_target, named_entries, unset_arguments

    for name, node in named_entries(logger, "logger"):
        check_target(node, f"logger.{name}", **unset_arguments(node, dict.fromkeys(LOGGER_FILLED, ".")))
        if name == "wandb" and "mode" in node:  # kaelab.dashboards opens the job's run with it
            check_choice(node["mode"], WANDB_MODES, "logger.wandb.mode")


def check_callbacks_values(callbacks: Any) -> None:
    """The ``callbacks`` group: named ``_target_`` configs (or null), each fitting its target's
    signature once kaelab gives it the stage's checkpoint ``dirpath``."""
    from kaelab.instantiate import check_target, named_entries, unset_arguments

    for name, node in named_entries(callbacks, "callbacks"):
        check_target(node, f"callbacks.{name}", **unset_arguments(node, dict.fromkeys(CALLBACK_FILLED, ".")))


def check_paths_values(paths: DictConfig) -> None:
    """The ``paths`` group: a run whose results could not be written must not start."""
    for key in ("run_dir", "cache_dir"):
        problem = writable_dir_problem(paths[key], f"paths.{key}")
        if problem:
            raise ConfigError(problem)


def check_stage_values(cfg: DictConfig) -> None:
    """Each stage group the run sets (or its task needs), by the check next to its schema."""
    for group, check in STAGE_CHECKS.items():
        if OmegaConf.select(cfg, group, default=None) is not None or cfg.task == group:
            check(cfg)


def _check_kae(cfg: DictConfig) -> None:
    from kaelab.koopman.config import check_kae_config

    check_kae_config(cfg.kae)


def _check_dmd(cfg: DictConfig) -> None:
    from kaelab.dmd.config import check_dmd_config

    check_dmd_config(cfg.dmd)


def _check_edit(cfg: DictConfig) -> None:
    from kaelab.editing.config import check_edit_config

    # a network whose config names no out_dim (e.g. a language model's vocab_size): the classes are
    # checked against the data's once it is built (kaelab.editing.pipeline.check_training_classes)
    n_classes = OmegaConf.select(cfg, "model.net.out_dim", default=None)
    check_edit_config(cfg.edit, n_classes, bool(OmegaConf.select(cfg, "model.checkpoint")))
    if cfg.edit is not None and cfg.edit.compare_retrain:
        from kaelab.editing.config import check_retrain_data

        check_retrain_data(cfg)


def _check_topology(cfg: DictConfig) -> None:
    from kaelab.topology.config import check_topology_config

    check_topology_config(cfg.topology)


# stage group -> its check (the group's own function, in its package, called with the group's values)
STAGE_CHECKS = {"kae": _check_kae, "dmd": _check_dmd, "edit": _check_edit, "topology": _check_topology}
