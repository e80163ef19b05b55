"""OmegaConf resolvers used by the configs (registered by `nin_lightning.config.register_configs`)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

GPU_ACCELERATORS = ("gpu", "cuda")


def gpus_per_node(accelerator: str, devices: Any) -> int | None:
    """GPUs a job asks its launcher for: `trainer.devices` on a GPU accelerator, else none (null).

    `trainer.accelerator=auto` asks for none; a sweep that needs GPUs says so with `trainer=gpu` or `trainer=ddp`.
    """
    if str(accelerator) not in GPU_ACCELERATORS:
        return None
    text = str(devices)
    return int(text) if text.isdigit() and int(text) > 0 else 1


def register_resolvers() -> None:
    """`${nin.gpus_per_node:${trainer.accelerator},${trainer.devices}}` (conf/hydra/launcher/*.yaml)."""
    if not OmegaConf.has_resolver("nin.gpus_per_node"):
        OmegaConf.register_new_resolver("nin.gpus_per_node", gpus_per_node)
