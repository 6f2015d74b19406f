"""LightningDataModules for the papers' tasks (Yin-Yang, MNIST) and any map-style datasets, all held
in memory as tensors; ``build_datamodule`` builds the one a ``data`` config's ``_target_`` names."""

from kaelab.data.datasets import DatasetDataModule, stack_dataset
from kaelab.data.mnist import MNISTDataModule
from kaelab.data.tensor_data import InMemoryDataModule, TensorDataModule
from kaelab.data.yinyang import YinYangDataModule, yinyang_class, yinyang_sample
from kaelab.errors import ConfigError

__all__ = [
    "DatasetDataModule",
    "InMemoryDataModule",
    "MNISTDataModule",
    "TensorDataModule",
    "YinYangDataModule",
    "build_datamodule",
    "stack_dataset",
    "yinyang_class",
    "yinyang_sample",
]


BUILTIN = {"yinyang": "kaelab.data.YinYangDataModule", "mnist": "kaelab.data.MNISTDataModule"}


def build_datamodule(cfg) -> TensorDataModule:
    """The datamodule that ``cfg`` (the ``data`` config) names by its ``_target_``, built by
    ``hydra.utils.instantiate`` (a dict with only ``name: yinyang | mnist`` builds kaelab's own).

    Any class will do whose splits are tensors: a ``TensorDataModule`` (kaelab's Yin-Yang and MNIST,
    or ``DatasetDataModule`` over any map-style datasets). ``name`` labels the data and is not
    passed on."""
    from omegaconf import OmegaConf

    from kaelab.instantiate import instantiate

    node = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    name = node.pop("name", None)
    if "_target_" not in node:
        if name not in BUILTIN:
            raise ConfigError(f"data needs a _target_ (a datamodule class), or data.name one of {sorted(BUILTIN)}")
        node["_target_"] = BUILTIN[name]
    dm = instantiate(OmegaConf.create(node), "data")
    if not isinstance(dm, TensorDataModule):
        raise ConfigError(
            f"data._target_={node['_target_']} built a {type(dm).__name__}, not a kaelab.data.TensorDataModule "
            "(every stage reads whole splits as tensors: wrap datasets in kaelab.data.DatasetDataModule)"
        )
    return dm
