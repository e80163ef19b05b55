"""DDP ranks 1..N-1 of a multirun job, started by the job's own process (rank 0); why: docs/scale-and-resume.md."""

from __future__ import annotations

import _thread
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from nin_lightning.cluster.devices import devices_per_node, is_ddp, visible_gpus, world_size
from nin_lightning.cluster.slurm import slurm_tasks, torchrun
from nin_lightning.config import JobContext, TrainConfig
from nin_lightning.errors import UserError

# TORCH_NCCL_BLOCKING_WAIT: a collective whose peer died raises after the timeout below instead of hanging
_DDP_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCH_NCCL_BLOCKING_WAIT")
# The process group's timeout for a job that shares its process with its sweep (Lightning's: 30 min): generous
# for a rank's start (imports and data: ~10 s here).
SHARED_PROCESS_TIMEOUT_S = 300.0


def _free_port() -> int:
    """A free port for the ranks' rendezvous below Linux's ephemeral range (32768-60999): one from port 0
    (Lightning's choice) may go to an outgoing connection before rank 0 binds it (rank 1 then waits forever)."""
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(20000, 32768)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise UserError("no free TCP port in 20000-32767 for the DDP ranks' rendezvous; set MASTER_PORT=<free port>")


@dataclass
class LocalRanks:
    """Ranks 1..N-1 of a multirun job, started by this process (rank 0); a no-op when not needed."""

    procs: list[subprocess.Popen] = field(default_factory=list)
    saved_env: dict[str, str | None] = field(default_factory=dict)
    failure: str | None = None  # set when a rank died: why this job stops
    own_process: bool = True  # False: the job shares its process with the rest of its sweep (basic launcher)
    _done: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, conf: TrainConfig, job: JobContext) -> LocalRanks:
        ranks = cls(own_process=not job.shares_process)
        externally = "LOCAL_RANK" in os.environ or slurm_tasks() == world_size(conf) or torchrun()
        if is_ddp(conf) and not externally and not job.multirun and "MASTER_PORT" not in os.environ:
            # a single run: Lightning starts the other ranks; they meet on this port (_free_port says why)
            ranks.saved_env = {"MASTER_PORT": None}
            os.environ["MASTER_PORT"] = str(_free_port())
        if not (job.multirun and is_ddp(conf)) or externally:
            return ranks
        if conf.trainer.num_nodes > 1:
            raise UserError("trainer.num_nodes > 1 under -m needs hydra/launcher=slurm (one task per device)")
        if not job.rerun or job.run_dir is None:
            raise UserError("DDP under -m needs the job's command (JobContext.rerun); run it through train.py")
        n = devices_per_node(conf.trainer.accelerator, conf.trainer.devices, visible_gpus())
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "NODE_RANK": "0",
               "WORLD_SIZE": str(n), "TORCH_NCCL_BLOCKING_WAIT": "1"}
        ranks.saved_env = {k: os.environ.get(k) for k in _DDP_ENV}
        os.environ.update(env, LOCAL_RANK="0")  # Lightning: the processes exist, do not re-execute
        for local_rank in range(1, n):
            cmd = [*job.rerun, f'hydra.run.dir="{job.run_dir}"', "hydra.output_subdir=null",
                   f"hydra.job.name=train_ddp_process_{local_rank}"]
            child_env = os.environ | env | {"LOCAL_RANK": str(local_rank)}
            ranks.procs.append(subprocess.Popen(cmd, cwd=job.cwd, env=child_env))
        threading.Thread(target=ranks._watch, name="nin-rank-watch", daemon=True).start()
        return ranks

    def _watch(self, grace_s: float = 60.0) -> None:
        """When a rank died, kill the others and interrupt rank 0 (`run.train` ends the job as failed, not the
        sweep); a main thread still stuck in a collective after `grace_s` is killed if the job has a process of
        its own (a process running the whole sweep waits for the process group's timeout instead)."""
        while not self._done.wait(2.0):
            if self.dead() and not self._done.is_set():
                sys.stderr.write(f"error: {self.failure}; stopping this job (its output is above)\n")
                for p in self.procs:
                    p.kill()  # a no-op for a process that ended
                _thread.interrupt_main()
                if not self._done.wait(grace_s) and self.own_process:
                    os.kill(os.getpid(), signal.SIGKILL)
                return

    def strategy(self, conf: TrainConfig) -> Any:
        """The config's strategy, or DDP with a process-group timeout for ranks started here in a process that runs
        the whole sweep (a rank that died ends this job, not the sweep)."""
        if not self.procs or self.own_process:
            return conf.trainer.strategy
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(timeout=timedelta(seconds=SHARED_PROCESS_TIMEOUT_S))

    def dead(self) -> str | None:
        """Why the job must stop, when a rank process exited with an error (also kept in `failure`)."""
        failed = [p for p in self.procs if p.poll() not in (None, 0)]
        if failed and self.failure is None:
            self.failure = f"DDP rank process {failed[0].pid} exited with code {failed[0].returncode}"
        return self.failure

    def stop_watching(self) -> None:
        """Rank 0 is ending the job itself: the watcher must not interrupt it any more."""
        self._done.set()

    def adopt(self, procs: list[subprocess.Popen]) -> None:
        """Rank processes that Lightning started for a single run that failed, for `close` to wait for or kill
        (Lightning kills them only on Ctrl-C)."""
        self.procs += [p for p in procs if p not in self.procs]

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
