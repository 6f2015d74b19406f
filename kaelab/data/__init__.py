"""LightningDataModules for the papers' tasks (Yin-Yang, MNIST), all held in memory as tensors."""

from kaelab.data.mnist import MNISTDataModule
from kaelab.data.tensor_data import InMemoryDataModule, TensorDataModule
from kaelab.data.yinyang import YinYangDataModule, yinyang_class, yinyang_sample
from kaelab.errors import ConfigError

__all__ = [
    "InMemoryDataModule",
    "MNISTDataModule",
    "TensorDataModule",
    "YinYangDataModule",
    "build_datamodule",
    "yinyang_class",
    "yinyang_sample",
]


def build_datamodule(cfg) -> TensorDataModule:
    """Build the datamodule named by ``cfg.name`` from a (validated) data config."""
    from omegaconf import OmegaConf

    kwargs = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
    name = kwargs.pop("name")
    modules = {"yinyang": YinYangDataModule, "mnist": MNISTDataModule}
    if name not in modules:
        raise ConfigError(f"data.name={name!r} is not one of {sorted(modules)}")
    return modules[name](**kwargs)
