"""Datasets: one LightningDataModule per dataset on a shared base."""

from __future__ import annotations

from importlib import import_module

from nin_lightning.config import DatasetConfig
from nin_lightning.data.base import NiNDataModule

# name -> "module:Class", imported lazily so that `digits` never imports torchvision.
REGISTRY = {
    "digits": "nin_lightning.data.digits:DigitsDataModule",
    "mnist": "nin_lightning.data.mnist:MNISTDataModule",
    "cifar10": "nin_lightning.data.cifar:CIFAR10DataModule",
    "cifar100": "nin_lightning.data.cifar:CIFAR100DataModule",
    "svhn": "nin_lightning.data.svhn:SVHNDataModule",
}


def build_datamodule(cfg: DatasetConfig) -> NiNDataModule:
    """The DataModule for `cfg.name`."""
    from nin_lightning.errors import UserError

    if cfg.name not in REGISTRY:
        choices = ", ".join(sorted(REGISTRY))
        raise UserError(f"dataset={cfg.name} is not available yet; choose one of: {choices}")
    module_name, cls_name = REGISTRY[cfg.name].split(":")
    return getattr(import_module(module_name), cls_name)(cfg)
