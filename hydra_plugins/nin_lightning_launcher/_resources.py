"""What one job of a sweep asks its launcher for, from that job's own composed `trainer` config.

Resources are computed per job, not once per sweep: `trainer.devices=1,2` or `trainer=cpu,ddp` under -m
gives jobs with different needs. One task per device per node (Lightning's SLURMEnvironment reads srun's
ranks), one node per `trainer.num_nodes`, and GPUs only on a GPU accelerator (`gpu`/`cuda`;
`trainer.accelerator=auto` asks for none). A value set in `hydra.launcher` (not null) wins over the trainer's.
The leading underscore keeps Hydra's plugin scan from re-executing this module (it re-runs every other
module of hydra_plugins, which would define a second `Resources` class).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf

from nin_lightning.cluster.devices import GPU_ACCELERATORS, devices_per_node


def drop_template_dir(folder: str) -> None:
    """Remove the empty `.submitit/%j` dir that submitit makes from its folder template (jobs get their own)."""
    with contextlib.suppress(OSError):  # not empty, or already gone: leave it
        Path(folder).rmdir()


@dataclass(frozen=True)
class Resources:
    """Per-node resources of one job; `gpus_per_node` None: no GPUs."""

    nodes: int
    tasks_per_node: int
    gpus_per_node: int | None


def job_resources(trainer: Any, nodes: int | None = None, tasks_per_node: int | None = None,
                  gpus_per_node: int | None = None) -> Resources:
    """Resources of a job with this `trainer` config; a non-None argument (set in hydra.launcher) wins.
    `gpus_per_node=0` means no GPUs."""
    trainer = trainer if isinstance(trainer, DictConfig) else OmegaConf.create(dict(trainer))
    accelerator = str(OmegaConf.select(trainer, "accelerator", default="auto"))
    gpu = accelerator in GPU_ACCELERATORS
    need_devices = tasks_per_node is None or (gpu and gpus_per_node is None)
    # visible_gpus=None: which node (and how many GPUs) the job lands on is not known before it starts
    devices = (devices_per_node(accelerator, OmegaConf.select(trainer, "devices", default=1), visible_gpus=None)
               if need_devices else 0)
    if gpus_per_node is None:
        gpus_per_node = devices if gpu else None
    return Resources(nodes=int(nodes if nodes is not None else OmegaConf.select(trainer, "num_nodes", default=1)),
                     tasks_per_node=int(tasks_per_node if tasks_per_node is not None else devices),
                     gpus_per_node=int(gpus_per_node) if gpus_per_node else None)


def job_trainer(hydra_context: HydraContext, config: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The `trainer` node of one job's config, composed the way the job itself will compose it."""
    job_cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    return OmegaConf.select(job_cfg, "trainer", default=OmegaConf.create())
