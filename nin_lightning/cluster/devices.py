"""Devices: how many a job uses per node, the world size, whether Lightning re-executes the script for DDP
(import-light: the launchers in hydra_plugins use `devices_per_node` before any job runs)."""

from __future__ import annotations

from typing import Any

from nin_lightning.config import TrainConfig
from nin_lightning.errors import UserError

GPU_ACCELERATORS = ("gpu", "cuda")
# Strategies that start ranks by re-executing the script (the others spawn/fork or need no ranks).
_SPAWNING = ("spawn", "fork", "notebook")


def devices_per_node(accelerator: str, devices: Any, visible_gpus: int | None) -> int:
    """`trainer.devices` as a count: `auto`/-1 is every visible GPU on a GPU accelerator, else 1 process.
    `visible_gpus=None`: not known yet (a launcher, before the job lands on a node)."""
    text = str(devices).strip()
    if text.isdigit() and int(text) >= 1:
        return int(text)
    if not (accelerator in GPU_ACCELERATORS or (accelerator == "auto" and bool(visible_gpus))):
        return 1
    if visible_gpus is None:
        raise UserError(f"trainer.devices={devices} (trainer.accelerator={accelerator}): a launcher must know how "
                        "many devices to reserve before the job starts; set trainer.devices to an integer >= 1, e.g. "
                        "trainer.devices=2 (or pin hydra.launcher.tasks_per_node and hydra.launcher.gpus_per_node)")
    return max(visible_gpus, 1)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def world_size(conf: TrainConfig) -> int:
    t = conf.trainer
    return devices_per_node(t.accelerator, t.devices, visible_gpus()) * t.num_nodes


def is_ddp(conf: TrainConfig) -> bool:
    """True when Lightning would start one process per device by re-executing the script."""
    strategy = conf.trainer.strategy
    reexec = strategy == "auto" or (strategy.startswith("ddp") and not any(s in strategy for s in _SPAWNING))
    return reexec and world_size(conf) > 1
