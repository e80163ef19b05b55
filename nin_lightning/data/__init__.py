"""One LightningDataModule per dataset of config.DATASETS, on a shared base (base.py)."""

from __future__ import annotations

from importlib import import_module

from nin_lightning.config import DATASETS, DatasetConfig
from nin_lightning.data.base import NiNDataModule


def build_datamodule(cfg: DatasetConfig) -> NiNDataModule:
    """The DataModule for `cfg.name` (its module is imported only now: `digits` never imports torchvision)."""
    module_name, cls_name = DATASETS[cfg.name].split(":")
    return getattr(import_module(module_name), cls_name)(cfg)


def check_data_files(cfg: DatasetConfig) -> None:
    """Without dataset.download, missing files (MNIST: truncated too) in one line now; `load()` checks MD5s."""
    if cfg.download:
        return
    datamodule = build_datamodule(cfg)
    problem = None if datamodule.placed_archives() else datamodule.file_problem(check_md5=False)
    if problem is not None:
        raise problem
