"""Memory and process limits, checked before any work: a start that cannot fit is refused in one line."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from nin_lightning.cluster.devices import GPU_ACCELERATORS, devices_per_node, visible_gpus
from nin_lightning.config import TrainConfig
from nin_lightning.errors import UserError

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
