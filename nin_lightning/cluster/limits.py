"""Checks before any work, each refusal one line: the hardware, strategy and cluster the trainer asks for, and
the memory and processes a start needs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from nin_lightning.cluster.devices import GPU_ACCELERATORS, devices_per_node, visible_gpus, world_size
from nin_lightning.cluster.slurm import slurm_tasks, torchrun
from nin_lightning.config import JobContext, TrainConfig
from nin_lightning.errors import UserError, did_you_mean

_CGROUP = Path("/sys/fs/cgroup")


def check_workers(num_workers: int) -> None:
    """Refuse more DataLoader workers than the CPUs this process may run on (its affinity: Slurm's, taskset's)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    if num_workers > cpus:
        raise UserError(f"dataset.num_workers={num_workers} is more than the {cpus} CPU(s) this process may use; "
                        f"pass dataset.num_workers={cpus} or fewer (0 loads batches in the training process)")


def available_ram() -> tuple[int, str]:
    """Bytes of RAM a new allocation can get (MemAvailable, or the cgroup's limit less its use if lower), and whence."""
    found = (0, "unknown")
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = (int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo")
    with contextlib.suppress(OSError, ValueError):
        limit = (_CGROUP / "memory.max").read_text().strip()
        if limit != "max":
            free = int(limit) - int((_CGROUP / "memory.current").read_text())
            if not found[0] or free < found[0]:
                found = (max(free, 0), "the cgroup's memory.max less memory.current")
    return found


def _gpu_memory() -> int:
    import torch

    return int(torch.cuda.get_device_properties(0).total_memory)


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_memory(conf: TrainConfig, params: int, activations: int, data_bytes: int = 0) -> None:
    """Refuse a model, batch and data that cannot fit: a lower bound (weights and gradients in fp32, the outputs a
    step keeps for backward, the uint8 data, per process) against the RAM on CPU, or the GPU's memory (the data
    stay in RAM there). DATA_BYTES: 0 before the data loaded."""
    t, batch = conf.trainer, conf.dataset.batch_size
    mixed = not str(t.precision).startswith(("32", "64"))
    model = params * 4 * 2
    steps = activations * batch * (2 if mixed else 4)
    gpu = t.accelerator in GPU_ACCELERATORS or (t.accelerator == "auto" and visible_gpus() > 0)
    processes = 1 if gpu else devices_per_node(t.accelerator, t.devices, 0)
    device_need = (model + steps) * (1 if gpu else processes)
    ram_need = data_bytes * processes + (0 if gpu else device_need)
    parts = (f"parameters {params:,} x 4 B x 2 (weights, gradients) + activations {activations:,} per image x batch "
             f"{batch} x {2 if mixed else 4} B")
    fix = "lower model.width or dataset.batch_size"
    if gpu and device_need > (limit := _gpu_memory()):
        raise UserError(f"the model and batch need at least {_gb(device_need)} of GPU memory ({parts}), but the GPU "
                        f"has {_gb(limit)}; {fix}")
    ram, source = available_ram()
    if ram and ram_need > ram:
        data = f"data {_gb(data_bytes)}" if data_bytes else "the data not counted yet"
        what = f"{parts} + {data}" if not gpu else data
        per = f", x {processes} processes" if processes > 1 else ""
        raise UserError(f"this run needs at least {_gb(ram_need)} of RAM ({what}{per}), but {_gb(ram)} is available "
                        f"({source}); {fix}{' or use fewer devices' if processes > 1 else ''}")


def check_devices(conf: TrainConfig, job: JobContext) -> None:
    """Stop at once, with one line naming the fix, when the trainer asks for hardware, a cluster or a strategy
    (one in Lightning's registry) that is not here."""
    from lightning.pytorch.strategies import StrategyRegistry

    t = conf.trainer
    gpus = visible_gpus()
    if t.accelerator in GPU_ACCELERATORS:
        option = job.trainer_option
        asked = f"trainer={option}" if option in ("gpu", "ddp") else f"trainer.accelerator={t.accelerator}"
        cpu_twin = "trainer=ddp_cpu" if t.strategy.startswith("ddp") else "trainer=cpu"
        if not gpus:
            raise UserError(f"{asked} needs a CUDA GPU, but torch.cuda.is_available() is False on this machine; "
                            f"use {cpu_twin} instead")
        if isinstance(t.devices, int) and t.devices > gpus:
            raise UserError(f"trainer.devices={t.devices} but this node has {gpus} GPU(s); pass trainer.devices={gpus}")
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not gpus)
    if t.sync_batchnorm and on_cpu and world_size(conf) > 1:
        raise UserError("trainer.sync_batchnorm=true needs CUDA GPUs (torch's SyncBatchNorm); on CPU pass "
                        "trainer.sync_batchnorm=false (trainer=ddp_cpu does)")
    tasks = slurm_tasks()
    if tasks is not None and tasks > 1 and not job.multirun and not job.run_dir_pinned:
        raise UserError(f"{tasks} Slurm tasks would each make a run dir of their own: pass "
                        "hydra.run.dir=outputs/runs/$SLURM_JOB_ID (one dir for all ranks; a requeued job finds its "
                        "last.ckpt there), or use hydra/launcher=slurm")
    if t.num_nodes > 1 and tasks is None and not torchrun():
        per_node = devices_per_node(t.accelerator, t.devices, gpus)
        raise UserError(f"trainer.num_nodes={t.num_nodes} needs a cluster that starts the processes: use "
                        "hydra/launcher=slurm (nodes and tasks follow trainer.num_nodes and trainer.devices), or "
                        f"sbatch --nodes={t.num_nodes} --ntasks-per-node={per_node} with srun")
    strategies = StrategyRegistry.available_strategies()
    if t.strategy != "auto" and t.strategy not in strategies:
        raise UserError(f"trainer.strategy={t.strategy}: no such Lightning strategy"
                        f"{did_you_mean(t.strategy, strategies)}; use auto, ddp, ddp_spawn or another of lightning's "
                        "StrategyRegistry names")
