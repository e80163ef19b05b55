"""`hydra/launcher=dry` and `dry_local`: a sweep's dry run. Each job's number, overrides and resources, then
the total.

    python train.py -m sweep=width hydra/launcher=dry_local       # a local sweep (plain -m, or launcher=local)
    python train.py -m model.dropout=0.0,0.5 seed=1,2 trainer=ddp trainer.devices=2 hydra/launcher=dry

Which launcher a dry run stands for is its config's `as_launcher`: `dry` is slurm.yaml with this target
(`as_launcher` slurm, the default), `dry_local` is local.yaml with it (`as_launcher: local`), so each
takes its launcher's keys as they are. Every job's config is composed and checked as the job itself would
compose it. Its resources are what `hydra/launcher=slurm` would ask for (_resources.py: nodes from
trainer.num_nodes, one task per device, GPUs only on a GPU accelerator; `hydra.launcher.{nodes,
tasks_per_node,gpus_per_node}` pin them as there), or what `hydra/launcher=local` gives it on this machine
(processes, GPUs; how many jobs at once and their CPU threads).
Nothing runs and no dir is left: Hydra's basic sweeper makes the sweep dir (and writes multirun.yaml)
before it calls a launcher, so the dirs it made for this sweep are removed again here.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.nin_lightning_launcher._resources import Resources, job_resources
from nin_lightning.config.sweep import MULTIRUN_FILE
from nin_lightning.errors import UserError
from nin_lightning.rundir.closing import first_missing


def describe(res: Resources) -> str:
    gpus = f"{res.gpus_per_node} GPU{'s' if res.gpus_per_node != 1 else ''}" if res.gpus_per_node else "no GPU"
    return f"{res.nodes} node{'s' if res.nodes != 1 else ''} x {res.tasks_per_node} task(s), {gpus} per node"


def describe_local(processes: int, gpus: int) -> str:
    return (f"{processes} process{'es' if processes != 1 else ''} (DDP)" if processes > 1 else "1 process") + \
        (f", {gpus} GPU{'s' if gpus != 1 else ''}" if gpus else ", no GPU")


class DryLauncher(Launcher):
    """Lists the jobs (with the per-job resources of the launcher it stands for) instead of launching them."""

    def __init__(self, nodes: int | None = None, tasks_per_node: int | None = None,
                 gpus_per_node: int | None = None, as_launcher: str = "slurm", **settings: Any) -> None:
        if as_launcher not in ("slurm", "local"):
            raise UserError(f"hydra.launcher.as_launcher={as_launcher}: expected slurm or local")
        self.pinned = {"nodes": nodes, "tasks_per_node": tasks_per_node, "gpus_per_node": gpus_per_node}
        self.slurm = settings  # the rest of conf/hydra/launcher/slurm.yaml (or local.yaml): shown, not used
        self.local: Any = None  # as_launcher=local: the local launcher with these settings (never launched)
        if as_launcher == "local":
            from hydra_plugins.nin_lightning_launcher.local_launcher import LocalLauncher

            self.local = LocalLauncher(tasks_per_node=tasks_per_node, gpus_per_node=gpus_per_node, **settings)
        self.job_gpus: list[int] = []  # as_launcher=local: each listed job's GPUs (how many run at once)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.made: Path | None = None  # the outermost dir that the sweeper creates for this sweep
        self.multirun_before: bytes | None = None  # an existing sweep dir's multirun.yaml, which the sweeper rewrites
        self.composed: dict[tuple[str, ...], DictConfig] = {}  # by the overrides that change composition
        self.listed = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Called by the sweeper before it makes the sweep dir: note which dirs do not exist yet."""
        self.config, self.hydra_context = config, hydra_context
        self.made = first_missing(Path(str(config.hydra.sweep.dir)))
        before = Path(str(config.hydra.sweep.dir)) / MULTIRUN_FILE
        self.multirun_before = before.read_bytes() if before.is_file() else None

    def _composing(self, override: str) -> bool:
        """Whether OVERRIDE changes what Hydra composes (a group choice, a hydra key, an added or deleted key),
        rather than one value of the composed config."""
        assert self.config is not None
        key = override.split("=", 1)[0]
        return key.startswith(("+", "~", "hydra.", "hydra/")) or key in self.config.hydra.runtime.choices

    def job_config(self, overrides: Sequence[str]) -> DictConfig:
        """One job's task config, as the job composes it. Hydra composes each distinct set of group choices
        once (a compose takes a quarter of a second); the job's plain values are then set on a copy, as the
        sweep's start check does (nin_lightning/cli/hydra_callbacks.py)."""
        assert self.hydra_context is not None and self.config is not None
        composing = tuple(o for o in overrides if self._composing(o))
        if composing not in self.composed:
            job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(composing))
            with open_dict(job_cfg):
                job_cfg.pop("hydra", None)
            self.composed[composing] = job_cfg
        job_cfg = self.composed[composing].copy()
        job_cfg.merge_with_dotlist([o for o in overrides if o not in composing])
        return job_cfg

    def job_line(self, num: int, overrides: Sequence[str], shown: Sequence[str]) -> str:
        """`#num  overrides  |  resources`, or `|  would fail: ERROR` with the line the job would stop with."""
        from nin_lightning.cli.errors import explain
        from nin_lightning.config import validate

        try:
            job_cfg = self.job_config(overrides)
            validate(job_cfg)
            trainer = OmegaConf.select(job_cfg, "trainer", default=OmegaConf.create())
            resources = self.describe_job(trainer)
        except Exception as exc:
            resources = f"would fail: {explain(exc)}"
        return f"#{num}  {' '.join(shown) or '(no overrides)'}  |  {resources}"

    def describe_job(self, trainer: Any) -> str:
        """A job's resources: Slurm's nodes, tasks and GPUs, or (local) its processes and GPUs on this machine."""
        if self.local is None:
            return describe(job_resources(trainer, **self.pinned))
        gpus = self.local.gpus_of(trainer)
        self.job_gpus.append(gpus)
        return describe_local(job_resources(trainer, gpus_per_node=gpus).tasks_per_node, gpus)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Print one line per job and the total; run nothing; remove the dirs the sweeper made for it."""
        assert self.config is not None
        jobs = [filter_overrides(overrides) for overrides in job_overrides]
        common = [o for o in jobs[0] if all(o in job for job in jobs)] if len(jobs) > 1 else []
        lines = [self.job_line(initial_job_idx + i, overrides, [o for o in jobs[i] if o not in common])
                 for i, overrides in enumerate(job_overrides)]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        try:  # a listing cut short (`| head`, a closed pipe) still removes the dirs the sweeper made
            print(self.local_line() if self.local is not None else
                  f"as hydra/launcher=slurm would submit them: {self.slurm_line()}", flush=True)
            if common:
                print(f"every job: {' '.join(common)}", flush=True)
            for line in lines:  # print, not the log: these lines are the dry run's whole output
                print(line, flush=True)
            self.listed += len(lines)
            failing = sum("|  would fail:" in line for line in lines)
            note = f", {failing} of which would fail" if failing else ""
            sweeper = self.config.hydra.runtime.choices.get("hydra/sweeper") or "basic"
            if sweeper != "basic":  # a search (Optuna) proposes each batch from the results of the ones before
                trials = OmegaConf.select(self.config, "hydra.sweeper.n_trials", default="?")
                note += (f"; the {sweeper} sweeper picks each batch from the results before it, so only its first "
                         f"batch can be listed ({trials} trials in all)")
            option = self.config.hydra.runtime.choices.get("hydra/launcher") or "dry"
            run_them = ("drop it to run them one after another, or pick hydra/launcher=local" if self.local is not None
                        else "pick hydra/launcher=slurm to submit them, or drop it to run them here")
            print(f"dry run: {self.listed} job(s){note}; a real run writes them to {sweep_dir}/. Nothing was run "
                  f"and no dir was made (hydra/launcher={option}: {run_them})", flush=True)
        finally:
            self._remove_made_dirs(sweep_dir)
        if sweeper != "basic":
            raise SystemExit(0)  # a search needs real results to go on; there are none
        return [self._not_run(overrides) for overrides in job_overrides]

    def slurm_line(self) -> str:
        """The Slurm settings every job shares (slurm.yaml and its command-line overrides)."""
        partition = self.slurm.get("partition") or "the cluster's default"
        memory = f"{self.slurm['mem_gb']} GB" if self.slurm.get("mem_gb") else "the partition's default"
        return (f"partition {partition}, {self.slurm.get('timeout_min')} min per job, "
                f"{self.slurm.get('cpus_per_task')} CPUs per task, memory {memory}")

    def local_line(self) -> str:
        """How `hydra/launcher=local` would run the listed jobs: how many at once, threads, time limit."""
        slots = self.local.slots(self.job_gpus, self.local.node_gpus() if any(self.job_gpus) else 0)
        threads = next(iter(self.local.threads(slots).values()))
        n_jobs = self.local.n_jobs if self.local.n_jobs is not None else "auto"
        limit = self.slurm.get("timeout_min")
        return (f"as hydra/launcher=local would run them on this machine: {slots} job(s) at a time (n_jobs={n_jobs}), "
                f"each in a process of its own with {threads} CPU thread(s)"
                + (f", stopped after {limit} min" if limit else ""))

    def _remove_made_dirs(self, sweep_dir: Path) -> None:
        """The sweep dir and the parents the sweeper created (only multirun.yaml in them), never anything else; an
        existing sweep dir gets its own multirun.yaml back (the report reads its swept keys there)."""
        if self.multirun_before is not None:
            (sweep_dir / MULTIRUN_FILE).write_bytes(self.multirun_before)
            return
        (sweep_dir / MULTIRUN_FILE).unlink(missing_ok=True)
        if self.made is None:
            return
        for folder in [sweep_dir, *sweep_dir.parents]:
            if not folder.is_dir() or any(folder.iterdir()):
                break
            shutil.rmtree(folder, ignore_errors=True)
            if folder == self.made:
                break

    @staticmethod
    def _not_run(overrides: Sequence[str]) -> JobReturn:
        # Nothing ran, so there is no value; COMPLETED only because Hydra's basic sweeper reads every job's
        # return_value (which raises for UNKNOWN, and re-raises a FAILED job's error).
        return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
