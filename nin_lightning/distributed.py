"""Devices and clusters: fail fast without a GPU, the world size, one task per device on Slurm.

Single runs (`python train.py trainer=ddp_cpu`) use Lightning's own launcher: rank 0 re-executes the
command line for the other ranks with `hydra.run.dir=<rank 0's dir> hydra.output_subdir=null`, so
there is one run dir. Multirun jobs start their ranks themselves (`local_ranks.LocalRanks`). On Slurm
(one task per device) Slurm creates the processes and nothing is re-executed.
"""

from __future__ import annotations

import os
from typing import Any

from nin_lightning.config import TrainConfig
from nin_lightning.errors import UserError

# Strategies that start ranks by re-executing the script (the others spawn/fork or need no ranks).
_SPAWNING = ("spawn", "fork", "notebook")


def _choice(group: str) -> str | None:
    """The option picked for a config group (e.g. trainer -> 'gpu'), when Hydra runs us."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get(group)


def devices_per_node(conf: TrainConfig) -> int:
    """trainer.devices as a number (`auto`/-1: every visible GPU, or 1 process on CPU)."""
    import torch

    devices = conf.trainer.devices
    if isinstance(devices, int) and devices > 0:
        return devices
    gpu = conf.trainer.accelerator in ("gpu", "cuda") or (conf.trainer.accelerator == "auto"
                                                           and torch.cuda.is_available())
    return max(torch.cuda.device_count(), 1) if gpu else 1


def world_size(conf: TrainConfig) -> int:
    return devices_per_node(conf) * conf.trainer.num_nodes


def is_ddp(conf: TrainConfig) -> bool:
    """True when Lightning would start one process per device by re-executing the script."""
    strategy = conf.trainer.strategy
    reexec = strategy == "auto" or (strategy.startswith("ddp") and not any(s in strategy for s in _SPAWNING))
    return reexec and world_size(conf) > 1


def slurm_tasks() -> int | None:
    """Tasks Slurm started for this job step (None outside Slurm or in an interactive `srun --pty bash`)."""
    if "SLURM_NTASKS" not in os.environ or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    return int(os.environ["SLURM_NTASKS"])


def torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"))


def _single_run_without_run_dir() -> bool:
    """A Hydra single run whose run dir comes from the default `${now:...}` pattern (differs per process)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
        return False
    return not any(o.lstrip("+").startswith("hydra.run.dir=") for o in HydraConfig.get().overrides.hydra)


def check_devices(conf: TrainConfig) -> None:
    """Stop at once, with one line naming the fix, when the trainer asks for hardware that is not here."""
    import torch

    t = conf.trainer
    option = _choice("trainer")
    if t.accelerator in ("gpu", "cuda"):
        asked = f"trainer={option}" if option in ("gpu", "ddp") else f"trainer.accelerator={t.accelerator}"
        cpu_twin = "trainer=ddp_cpu" if t.strategy.startswith("ddp") else "trainer=cpu"
        if not torch.cuda.is_available():
            raise UserError(f"{asked} needs a CUDA GPU, but torch.cuda.is_available() is False on this machine; "
                            f"use {cpu_twin} instead")
        if isinstance(t.devices, int) and t.devices > torch.cuda.device_count():
            raise UserError(f"trainer.devices={t.devices} but this node has {torch.cuda.device_count()} GPU(s); "
                            f"pass trainer.devices={torch.cuda.device_count()}")
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available())
    if t.sync_batchnorm and on_cpu and world_size(conf) > 1:
        raise UserError("trainer.sync_batchnorm=true needs CUDA GPUs (torch's SyncBatchNorm); on CPU pass "
                        "trainer.sync_batchnorm=false (trainer=ddp_cpu does)")
    tasks = slurm_tasks()
    if tasks is not None and tasks > 1 and _single_run_without_run_dir():
        raise UserError(f"{tasks} Slurm tasks would each make a run dir of their own: pass "
                        "hydra.run.dir=outputs/runs/$SLURM_JOB_ID (one dir for all ranks; a requeued job finds its "
                        "last.ckpt there), or use hydra/launcher=slurm")
    if t.num_nodes > 1 and slurm_tasks() is None and not torchrun():
        raise UserError(f"trainer.num_nodes={t.num_nodes} needs a cluster that starts the processes: use "
                        "hydra/launcher=slurm (nodes and tasks follow trainer.num_nodes and trainer.devices), or "
                        f"sbatch --nodes={t.num_nodes} --ntasks-per-node={devices_per_node(conf)} with srun")


def cluster_plugins(conf: TrainConfig) -> list[Any]:
    """The cluster environment for the Trainer: on Slurm, requeueing is never Lightning's job.

    Requeueing has exactly one owner: submitit (hydra/launcher=slurm) or Slurm itself (`--requeue`,
    `scontrol requeue`). Lightning's SLURMEnvironment therefore runs with auto_requeue=False.
    """
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    tasks = slurm_tasks()
    if tasks is None or torchrun():
        return []
    needed = world_size(conf)
    if tasks == needed:
        return [SLURMEnvironment(auto_requeue=False)]
    if tasks == 1 and conf.trainer.num_nodes == 1:
        return [LightningEnvironment()]  # one Slurm task; Lightning starts the local ranks itself
    raise UserError(
        f"Slurm started {tasks} tasks but trainer.devices x trainer.num_nodes = {needed}; submit with "
        f"--nodes={conf.trainer.num_nodes} --ntasks-per-node={devices_per_node(conf)} (one task per device)"
    )


