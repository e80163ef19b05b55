"""Devices and processes: fail fast without a GPU, one task per device on Slurm, DDP ranks under `-m`.

Single runs (`python train.py trainer=ddp_cpu`) use Lightning's own launcher: rank 0 re-executes the
command line for the other ranks with `hydra.run.dir=<rank 0's dir> hydra.output_subdir=null`, so
there is one run dir. Under `-m` that re-execution would re-run the whole sweep (the command line holds
`-m` and every swept value), and inside a launcher's worker there is no usable command line at all.
So for multirun jobs `LocalRanks` starts the other ranks itself, as single runs of *this job's*
overrides in this job's dir (`python -m nin_lightning.ddp_rank ...`), and tells Lightning through
`LOCAL_RANK`/`WORLD_SIZE` that the processes exist already. On Slurm (one task per device) Slurm
creates the processes and nothing is re-executed.
"""

from __future__ import annotations

import _thread
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nin_lightning.config import TrainConfig
from nin_lightning.errors import UserError

# Strategies that start ranks by re-executing the script (the others spawn/fork or need no ranks).
_SPAWNING = ("spawn", "fork", "notebook")
_DDP_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


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


def _slurm_tasks() -> int | None:
    """Tasks Slurm started for this job step (None outside Slurm or in an interactive `srun --pty bash`)."""
    if "SLURM_NTASKS" not in os.environ or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    return int(os.environ["SLURM_NTASKS"])


def _torchrun() -> bool:
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
    tasks = _slurm_tasks()
    if tasks is not None and tasks > 1 and _single_run_without_run_dir():
        raise UserError(f"{tasks} Slurm tasks would each make a run dir of their own: pass "
                        "hydra.run.dir=outputs/runs/$SLURM_JOB_ID (one dir for all ranks; a requeued job finds its "
                        "last.ckpt there), or use hydra/launcher=slurm")
    if t.num_nodes > 1 and _slurm_tasks() is None and not _torchrun():
        raise UserError(f"trainer.num_nodes={t.num_nodes} needs a cluster that starts the processes: use "
                        "hydra/launcher=slurm (nodes and tasks follow trainer.num_nodes and trainer.devices), or "
                        f"sbatch --nodes={t.num_nodes} --ntasks-per-node={devices_per_node(conf)} with srun")


def cluster_plugins(conf: TrainConfig) -> list[Any]:
    """The cluster environment for the Trainer: on Slurm, requeueing is never Lightning's job.

    Requeueing has exactly one owner: submitit (hydra/launcher=slurm) or Slurm itself (`--requeue`,
    `scontrol requeue`). Lightning's SLURMEnvironment therefore runs with auto_requeue=False.
    """
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    tasks = _slurm_tasks()
    if tasks is None or _torchrun():
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


# --------------------------------------------------------------------------------------------------------
# DDP ranks for multirun jobs
# --------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_DROP_HYDRA = ("hydra.mode=", "hydra/launcher=", "hydra.launcher.", "hydra/sweeper=", "hydra.sweeper.",
               "hydra.sweep.", "hydra.run.dir=", "hydra.output_subdir=", "hydra.job.name=")


def rank_command(job_dir: Path, local_rank: int) -> tuple[list[str], str]:
    """(argv, cwd) that runs this Hydra job again as a single run of rank `local_rank` in `job_dir`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hc = HydraConfig.get()
    cmd = [sys.executable, "-m", "nin_lightning.ddp_rank"]
    for source in hc.runtime.config_sources:
        where = source.path if source.schema == "file" else f"{source.schema}://{source.path}"
        if source.provider == "main":
            cmd += ["--config-path", where]
        elif source.provider == "command-line":
            cmd += ["--config-dir", where]
    cmd += ["--config-name", hc.job.config_name]
    cmd += list(hc.overrides.task)
    cmd += [o for o in hc.overrides.hydra if not o.lstrip("+~").startswith(_DROP_HYDRA)]
    cmd += [f'hydra.run.dir="{job_dir}"', "hydra.output_subdir=null", f"hydra.job.name=train_ddp_process_{local_rank}"]
    return cmd, get_original_cwd()


@dataclass
class LocalRanks:
    """Ranks 1..N-1 of a multirun job, started by this process (rank 0); a no-op when not needed."""

    procs: list[subprocess.Popen] = field(default_factory=list)
    saved_env: dict[str, str | None] = field(default_factory=dict)
    failure: str | None = None  # set when a rank died: why this job stops
    _done: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, conf: TrainConfig, job_dir: Path) -> LocalRanks:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        ranks = cls()
        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        externally = "LOCAL_RANK" in os.environ or _slurm_tasks() == world_size(conf) or _torchrun()
        if not (multirun and is_ddp(conf)) or externally:
            return ranks
        if conf.trainer.num_nodes > 1:
            raise UserError("trainer.num_nodes > 1 under -m needs hydra/launcher=slurm (one task per device)")
        n = devices_per_node(conf)
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "NODE_RANK": "0",
               "WORLD_SIZE": str(n)}
        ranks.saved_env = {k: os.environ.get(k) for k in _DDP_ENV}
        os.environ.update(env, LOCAL_RANK="0")  # Lightning: the processes exist, do not re-execute
        for local_rank in range(1, n):
            cmd, cwd = rank_command(job_dir, local_rank)
            child_env = os.environ | env | {"LOCAL_RANK": str(local_rank)}
            ranks.procs.append(subprocess.Popen(cmd, cwd=cwd, env=child_env))
        threading.Thread(target=ranks._watch, name="nin-rank-watch", daemon=True).start()
        return ranks

    def _watch(self, grace_s: float = 60.0) -> None:
        """A rank that died would leave rank 0 waiting in a collective: end this job, not the sweep.

        The other ranks are killed and rank 0's main thread is interrupted, so `run.train` ends the job as
        failed (metrics.json, W&B run closed) and the launcher goes on with the next job. A main thread
        still stuck in a collective after `grace_s` (NCCL does not notice a dead peer) is killed."""
        while not self._done.wait(2.0):
            if self.dead() and not self._done.is_set():
                sys.stderr.write(f"error: {self.failure}; stopping this job (its output is above)\n")
                for p in self.procs:
                    if p.poll() is None:
                        p.kill()
                _thread.interrupt_main()
                if not self._done.wait(grace_s):
                    os.kill(os.getpid(), signal.SIGKILL)
                return

    def dead(self) -> str | None:
        """Why the job must stop, when a rank process exited with an error (also kept in `failure`)."""
        failed = [p for p in self.procs if p.poll() not in (None, 0)]
        if failed and self.failure is None:
            self.failure = f"DDP rank process {failed[0].pid} exited with code {failed[0].returncode}"
        return self.failure

    def stop_watching(self) -> None:
        """Rank 0 is ending the job itself: the watcher must not interrupt it any more."""
        self._done.set()

    def close(self, timeout_s: float = 120.0) -> None:
        """Wait for the ranks, drop the process group and the DDP environment, for the next job."""
        if not self.procs and not self.saved_env:
            return
        self._done.set()
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.procs, self.saved_env = [], {}
