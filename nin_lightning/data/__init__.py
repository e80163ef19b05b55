"""One LightningDataModule per dataset of config.DATASETS, on a shared base (base.py)."""

from __future__ import annotations

from importlib import import_module

from nin_lightning.config import DATASETS, DatasetConfig
from nin_lightning.data.base import NiNDataModule
from nin_lightning.errors import UserError


def build_datamodule(cfg: DatasetConfig) -> NiNDataModule:
    """The DataModule for `cfg.name` (its module is imported only now: `digits` never imports torchvision)."""
    if cfg.name not in DATASETS:
        raise UserError(f"dataset={cfg.name} is not available; choose one of: {', '.join(DATASETS)}")
    module_name, cls_name = DATASETS[cfg.name].split(":")
    return getattr(import_module(module_name), cls_name)(cfg)


def check_data_files(cfg: DatasetConfig) -> None:
    """Without dataset.download, files missing (or MNIST's truncated): one line now, before any work (no MD5s:
    `load()` reads the files anyway, and local rank 0's `unpack()` checks archives placed by hand)."""
    if cfg.download:
        return
    datamodule = build_datamodule(cfg)
    problem = None if datamodule.placed_archives() else datamodule.file_problem(check_md5=False)
    if problem is not None:
        raise problem
