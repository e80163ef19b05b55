"""`hydra/launcher=local`: N jobs at once on one machine, each job in a fresh process of its own.

Why not a stock launcher: joblib/loky keeps a pool of N worker processes and REUSES them across jobs,
so module state, a live W&B run, an initialised torch.distributed group or a CUDA context of one job
leaks into the next; submitit's local executor gives each job its own process but starts every job
of the sweep at once. This is submitit's local launcher with a rolling window of `n_jobs`: a job
starts when a slot frees, in its own `python -m submitit.core._submit` process, with its log in
SWEEP_DIR/.submitit/<job id>/. Each job's GPUs follow its own composed trainer config (_resources.py)
unless `gpus_per_node` is set: it sees the lowest GPU indices that no running job holds.
(Hydra only loads launchers from the `hydra_plugins` package.)
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as SubmititLocalLauncher
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.nin_lightning_launcher._resources import drop_template_dir, job_resources, job_trainer

log = logging.getLogger(__name__)

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the processes started inside the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def crashed(overrides: Sequence[str], exc: BaseException) -> JobReturn:
    """A failed JobReturn for a job whose process died without a result (killed, out of memory...)."""
    ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
    ret.return_value = exc
    return ret


class LocalLauncher(Launcher):
    """At most `n_jobs` jobs at once, each in a fresh process (submitit's local executor)."""

    def __init__(self, n_jobs: int = 2, poll_s: float = 0.5, cpus_per_task: int | None = None,
                 gpus_per_node: int | None = None, submitit_folder: str = ".submitit/%j", max_num_timeout: int = 0,
                 **executor_params: Any) -> None:
        if int(n_jobs) < 1:
            raise ValueError(f"hydra.launcher.n_jobs={n_jobs}: expected an integer >= 1")
        self.n_jobs, self.poll_s = int(n_jobs), float(poll_s)
        self.cpus_per_task = cpus_per_task
        self.gpus_per_node = None if gpus_per_node is None else int(gpus_per_node)  # None: per job
        self.folder, self.max_num_timeout = str(submitit_folder), int(max_num_timeout)
        # timeout_min, signal_delay_s, tasks_per_node, stderr_to_stdout, setup: submitit.LocalExecutor's own
        self.executor_params = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
                                for k, v in executor_params.items() if v is not None}
        # What each job process runs: submitit's own Hydra job callable (importable wherever Hydra is).
        self.job = SubmititLocalLauncher()
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Called by Hydra before `launch`."""
        self.config, self.hydra_context = config, hydra_context
        self.job.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def _executor(self) -> Any:
        import submitit

        executor = submitit.LocalExecutor(folder=self.folder, max_num_timeout=self.max_num_timeout)
        executor.update_parameters(**self.executor_params)
        return executor

    def job_gpus(self, overrides: Sequence[str]) -> int:
        """GPUs of the job with these overrides: `gpus_per_node` if set, else from its own trainer config."""
        if self.gpus_per_node is not None:
            return self.gpus_per_node
        assert self.hydra_context is not None and self.config is not None
        trainer = job_trainer(self.hydra_context, self.config, overrides)
        return job_resources(trainer, tasks_per_node=1).gpus_per_node or 0

    def _threads(self) -> dict[str, str]:
        """torch/OpenMP threads per job: `cpus_per_task`, or this machine's CPUs shared among the slots."""
        cpus = self.cpus_per_task or max(1, (os.cpu_count() or 1) // self.n_jobs)
        return dict.fromkeys(THREAD_VARS, str(cpus))

    @staticmethod
    def free_gpus(count: int, busy: set[int]) -> tuple[int, ...]:
        """The `count` lowest GPU indices not in `busy`, so jobs running side by side never share a GPU."""
        return tuple(itertools.islice((i for i in itertools.count() if i not in busy), count))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Start jobs as slots free up and wait for all; a job whose process died counts as failed."""
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        gpus = [self.job_gpus(overrides) for overrides in job_overrides]  # every job composes before any starts
        executor = self._executor()
        log.info(f"Local launcher: {len(job_overrides)} jobs, {self.n_jobs} at once; logs in {sweep_dir}/.submitit")
        queue = list(enumerate(job_overrides))
        jobs: list[Any] = [None] * len(job_overrides)
        running: dict[int, tuple[int, ...]] = {}  # job index -> the GPUs it holds
        with environ(self._threads()):
            while queue or running:
                running = {idx: held for idx, held in running.items() if not jobs[idx].done()}
                while queue and len(running) < self.n_jobs:
                    idx, overrides = queue.pop(0)
                    num = initial_job_idx + idx
                    log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
                    held = self.free_gpus(gpus[idx], set().union(*running.values()))
                    executor.update_parameters(gpus_per_node=gpus[idx], visible_gpus=held)
                    jobs[idx] = executor.submit(
                        self.job, list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state()
                    )
                    running[idx] = held
                time.sleep(self.poll_s)
        drop_template_dir(self.folder)
        return [self._result(job, overrides) for job, overrides in zip(jobs, job_overrides, strict=True)]

    @staticmethod
    def _result(job: Any, overrides: Sequence[str]) -> JobReturn:
        try:
            return job.results()[0]
        except Exception as exc:  # the job's process died before it could return a result
            return crashed(overrides, exc)
