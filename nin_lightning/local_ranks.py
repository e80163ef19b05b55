"""DDP ranks 1..N-1 of a multirun job, started by the job's own process (rank 0).

Under `-m`, Lightning's re-execution of the command line would re-run the whole sweep (the command line
holds `-m` and every swept value), and inside a launcher's worker there is no usable command line at all.
So `LocalRanks` starts the other ranks itself, as single runs of *this job's* overrides in this job's dir
(`python -m nin_lightning.ddp_rank ...`), and tells Lightning through `LOCAL_RANK`/`WORLD_SIZE` that the
processes exist already.
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

from nin_lightning.config import TrainConfig
from nin_lightning.distributed import devices_per_node, is_ddp, slurm_tasks, torchrun, world_size
from nin_lightning.errors import UserError

_DDP_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


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
        externally = "LOCAL_RANK" in os.environ or slurm_tasks() == world_size(conf) or torchrun()
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
