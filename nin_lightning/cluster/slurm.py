"""The Slurm (or torchrun) environment a job runs in: its tasks, its restarts, its preemption signal."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from nin_lightning.cluster.devices import devices_per_node, visible_gpus, world_size
from nin_lightning.config import TrainConfig
from nin_lightning.errors import UserError


def slurm_tasks() -> int | None:
    """Tasks Slurm started for this job step (None outside Slurm or in an interactive `srun --pty bash`)."""
    if "SLURM_NTASKS" not in os.environ or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    return int(os.environ["SLURM_NTASKS"])


def torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"))


def restart_count() -> int:
    """How often Slurm restarted this job (a requeue): then it continues from its run dir's last.ckpt."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def restart_note(restarts: int, run_dir: Path, has_checkpoint: bool) -> str:
    """One line about a requeued job's start."""
    job = os.environ.get("SLURM_JOB_ID")
    if not has_checkpoint:
        return (f"Slurm restart #{restarts} of job {job}, but {run_dir} holds no checkpoints/last.ckpt: starting "
                "fresh. Pin the run dir in the job script (hydra.run.dir=outputs/runs/$SLURM_JOB_ID) so that a "
                "requeued job finds its checkpoint")
    return f"Slurm restart #{restarts} of job {job}: resume=auto"


def submitit_signal() -> signal.Signals | None:
    """The signal submitit uses for time-outs and preemption, when this process is a submitit job."""
    if "SUBMITIT_FOLDER" not in os.environ:
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


def cluster_plugins(conf: TrainConfig) -> list[Any]:
    """The cluster environment for the Trainer: on Slurm, SLURMEnvironment without Lightning's requeue (submitit
    or Slurm itself requeue: docs/scale-and-resume.md)."""
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    tasks = slurm_tasks()
    if tasks is None or torchrun():
        return []
    needed = world_size(conf)
    if tasks == needed:
        return [SLURMEnvironment(auto_requeue=False)]
    if tasks == 1 and conf.trainer.num_nodes == 1:
        return [LightningEnvironment()]  # one Slurm task; Lightning starts the local ranks itself
    per_node = devices_per_node(conf.trainer.accelerator, conf.trainer.devices, visible_gpus())
    raise UserError(
        f"Slurm started {tasks} tasks but trainer.devices x trainer.num_nodes = {needed}; submit with "
        f"--nodes={conf.trainer.num_nodes} --ntasks-per-node={per_node} (one task per device)"
    )


def env_rank() -> int:
    """This process's global rank as its environment gives it, read as Lightning reads it (`_get_rank` in
    lightning/fabric/utilities/rank_zero.py), without importing Lightning: 0 when none is set."""
    return next((int(os.environ[key]) for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
                 if key in os.environ), 0)


def process_rank() -> int:
    """This process's global rank before any process group exists (0 when it is the only one)."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0))


def local_rank(default: int = 0) -> int:
    """This process's rank on its node before any process group exists: LOCAL_RANK (Lightning sets it in the
    ranks it starts inside one Slurm task, where SLURM_LOCALID=0), SLURM_LOCALID or `default`."""
    for key in ("LOCAL_RANK", "SLURM_LOCALID"):
        if os.environ.get(key, "").strip():
            return int(os.environ[key])
    return default
