"""`hydra/launcher=slurm`: hydra-submitit-launcher's Slurm launcher with resources computed per job.

The stock launcher asks Slurm for the same nodes/tasks/GPUs for every job of a sweep, resolved once from
the base config. This one composes each job's config, derives `nodes`, `tasks_per_node` and
`gpus_per_node` from its `trainer` (_resources.py), and submits one job array per distinct set of
resources. `hydra.launcher.{nodes,tasks_per_node,gpus_per_node}` default to null (follow the trainer); an
integer set there wins for every job (`gpus_per_node=0`: no GPUs).
"""


import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import OmegaConf

from hydra_plugins.nin_lightning_launcher._resources import Resources, drop_template_dir, job_resources, job_trainer

log = logging.getLogger(__name__)

PER_JOB = ("nodes", "tasks_per_node", "gpus_per_node")
CLUSTER = "slurm"  # submitit's name of the cluster (the stock launcher keeps it in a private class attribute)


@dataclass
class SlurmConf(SlurmQueueConf):
    """hydra-submitit-launcher's schema; null resources follow each job's trainer config."""

    _target_: str = "hydra_plugins.nin_lightning_launcher.slurm_launcher.SlurmLauncher"
    nodes: int | None = None
    tasks_per_node: int | None = None
    gpus_per_node: int | None = None


ConfigStore.instance().store(group="hydra/launcher", name="slurm_schema", node=SlurmConf, provider="nin_lightning")


class SlurmLauncher(SubmititSlurmLauncher):
    """One Slurm job array per distinct (nodes, tasks_per_node, gpus_per_node) among the sweep's jobs."""

    def resources(self, overrides: Sequence[str]) -> Resources:
        """What the job with these overrides asks Slurm for (values pinned in hydra.launcher win)."""
        assert self.hydra_context is not None and self.config is not None
        pinned = {k: self.params.get(k) for k in PER_JOB}
        if all(v is not None for v in pinned.values()):
            return job_resources({}, **pinned)
        return job_resources(job_trainer(self.hydra_context, self.config, overrides), **pinned)

    def groups(self, job_overrides: Sequence[Sequence[str]]) -> dict[Resources, list[int]]:
        """Job indices by the resources they need, in sweep order."""
        groups: dict[Resources, list[int]] = {}
        for idx, overrides in enumerate(job_overrides):
            groups.setdefault(self.resources(overrides), []).append(idx)
        return groups

    def executor(self, res: Resources) -> Any:
        """A submitit Slurm executor with this launcher's parameters and `res` (as the stock launcher maps them)."""
        import submitit

        params = {**self.params, **asdict(res)}
        folder, max_num_timeout = params.pop("submitit_folder"), params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=CLUSTER, folder=folder,
                                         **{f"{CLUSTER}_max_num_timeout": max_num_timeout})
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{CLUSTER}_{k}": v for k, v in params.items()})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Compose every job first (a bad job fails the sweep before anything is submitted), submit one
        array per group, then wait for all; returns in sweep order."""
        assert self.config is not None and len(job_overrides) > 0
        groups = self.groups(job_overrides)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        state = Singleton.get_state()
        jobs: dict[int, Any] = {}
        for res, idxs in groups.items():
            gpus = res.gpus_per_node or 0
            log.info(f"Slurm array of {len(idxs)}: nodes={res.nodes} tasks_per_node={res.tasks_per_node} "
                     f"gpus_per_node={gpus}")
            args = []
            for idx in idxs:
                num = initial_job_idx + idx
                log.info(f"\t#{num} : {' '.join(filter_overrides(job_overrides[idx]))}")
                args.append((list(job_overrides[idx]), "hydra.sweep.dir", num, f"job_id_for_{num}", state))
            jobs.update(zip(idxs, self.executor(res).map_array(self, *zip(*args, strict=True)), strict=True))
        drop_template_dir(str(self.params["submitit_folder"]))
        return [jobs[idx].results()[0] for idx in range(len(job_overrides))]
