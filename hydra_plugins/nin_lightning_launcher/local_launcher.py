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

import logging
import os
import time
from collections import Counter
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
from nin_lightning.cluster.devices import visible_gpus
from nin_lightning.errors import UserError

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


CPUS_PER_CPU_JOB = 2  # n_jobs=auto without GPUs: one job per 2 cores (a NiN step keeps 2 threads busy)


class LocalLauncher(Launcher):
    """Jobs side by side on this machine, each in a fresh process (submitit's local executor).

    `n_jobs`: how many at once; `auto`: as many as the node's GPUs hold (`jobs_per_gpu` jobs per GPU, each job
    with its own `trainer.devices` GPUs), or one per 2 CPU cores for jobs without GPUs. A GPU is never given to
    more than `jobs_per_gpu` jobs at once; a job starts when enough GPUs have a free place."""

    def __init__(self, n_jobs: int | str = "auto", jobs_per_gpu: int = 1, poll_s: float = 0.5,
                 cpus_per_task: int | None = None, gpus_per_node: int | None = None,
                 submitit_folder: str = ".submitit/%j", max_num_timeout: int = 0, **executor_params: Any) -> None:
        if not (str(n_jobs) == "auto" or (str(n_jobs).isdigit() and int(n_jobs) >= 1)):
            raise UserError(f"hydra.launcher.n_jobs={n_jobs}: expected auto or an integer >= 1")
        if not str(jobs_per_gpu).isdigit() or int(jobs_per_gpu) < 1:
            raise UserError(f"hydra.launcher.jobs_per_gpu={jobs_per_gpu}: expected an integer >= 1")
        self.n_jobs: int | None = None if str(n_jobs) == "auto" else int(n_jobs)  # None: auto
        self.jobs_per_gpu, self.poll_s = int(jobs_per_gpu), float(poll_s)
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
        return self.gpus_of(job_trainer(self.hydra_context, self.config, overrides))

    def gpus_of(self, trainer: Any) -> int:
        """GPUs of a job with this composed `trainer` config: `gpus_per_node` if set, else its own."""
        if self.gpus_per_node is not None:
            return self.gpus_per_node
        return job_resources(trainer, tasks_per_node=1).gpus_per_node or 0

    def node_gpus(self) -> int:
        """GPUs this machine has (CUDA_VISIBLE_DEVICES applies)."""
        return visible_gpus()

    def slots(self, gpus: Sequence[int], node_gpus: int) -> int:
        """Jobs at once: `n_jobs`, or for `auto` what the GPUs (or, without GPU jobs, the CPUs) hold."""
        if self.n_jobs is not None:
            return self.n_jobs
        if node_gpus and any(gpus):
            return max(1, node_gpus * self.jobs_per_gpu // max(1, min(g for g in gpus if g)))
        return max(1, (os.cpu_count() or 1) // CPUS_PER_CPU_JOB)

    def threads(self, slots: int) -> dict[str, str]:
        """torch/OpenMP threads per job: `cpus_per_task`, or this machine's CPUs shared among the slots."""
        cpus = self.cpus_per_task or max(1, (os.cpu_count() or 1) // slots)
        return dict.fromkeys(THREAD_VARS, str(cpus))

    def pick_gpus(self, count: int, load: dict[int, int], node_gpus: int) -> tuple[int, ...] | None:
        """`count` GPUs with a free place (fewer than `jobs_per_gpu` jobs), least loaded and lowest first;
        None while too few are free. Without a known GPU count (none visible), indices are not bounded."""
        pool = range(node_gpus) if node_gpus else range(max([*load, -1]) + 1 + count)
        free = sorted((load.get(g, 0), g) for g in pool if load.get(g, 0) < self.jobs_per_gpu)
        return tuple(sorted(g for _, g in free[:count])) if len(free) >= count else None

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Start jobs as places free up and wait for all; a job whose process died counts as failed."""
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        gpus = [self.job_gpus(overrides) for overrides in job_overrides]  # every job composes before any starts
        node_gpus = self.node_gpus() if any(gpus) else 0
        too_big = [g for g in gpus if node_gpus and g > node_gpus]
        if too_big:
            raise UserError(f"a job of this sweep needs {too_big[0]} GPUs, but this machine has {node_gpus}; lower "
                            "trainer.devices, or use hydra/launcher=slurm")
        slots = self.slots(gpus, node_gpus)
        executor = self._executor()
        log.info(f"Local launcher: {len(job_overrides)} jobs, {slots} at once; logs in {sweep_dir}/.submitit")
        queue = list(enumerate(job_overrides))
        jobs: list[Any] = [None] * len(job_overrides)
        running: dict[int, tuple[int, ...]] = {}  # job index -> the GPUs it holds
        with environ(self.threads(slots)):
            while queue or running:
                running = {idx: held for idx, held in running.items() if not jobs[idx].done()}
                while queue and len(running) < slots:
                    load = Counter(g for held in running.values() for g in held)
                    held = self.pick_gpus(gpus[queue[0][0]], load, node_gpus)
                    if held is None:
                        break  # the next job waits for GPUs
                    idx, overrides = queue.pop(0)
                    num = initial_job_idx + idx
                    log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
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
