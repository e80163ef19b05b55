"""Hydra's runtime read once into the `JobContext` that `run.train` gets (only here and the callbacks read it)."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_original_cwd
from omegaconf import OmegaConf

from nin_lightning.config import JobContext
from nin_lightning.config.sweep import job_label, short_names, sweep_dir_keys

# The outermost dir Hydra makes for a single run, noted by the RunDirMade callback: a refused start removes it.
made_for_run: Path | None = None

# Hydra overrides that belong to the sweep, not to the job: dropped when a job's DDP rank re-runs it.
_SWEEP_ONLY = ("hydra.mode=", "hydra/launcher=", "hydra.launcher.", "hydra/sweeper=", "hydra.sweeper.",
               "hydra.sweep.", "hydra.run.dir=", "hydra.output_subdir=", "hydra.job.name=")


def _rerun_command(hc: HydraConf) -> tuple[str, ...]:
    """argv that runs this job again as a single run (cli/ddp_rank.py); LocalRanks adds the run dir and log name."""
    cmd = [sys.executable, "-m", "nin_lightning.cli.ddp_rank"]
    for source in hc.runtime.config_sources:
        where = source.path if source.schema == "file" else f"{source.schema}://{source.path}"
        if source.provider == "main":
            cmd += ["--config-path", where]
        elif source.provider == "command-line":
            cmd += ["--config-dir", where]
    cmd += ["--config-name", hc.job.config_name, *hc.overrides.task]
    cmd += [o for o in hc.overrides.hydra if not o.lstrip("+~").startswith(_SWEEP_ONLY)]
    return tuple(cmd)


def _hydra_files(hc: HydraConf, task_yaml: str) -> dict[str, str]:
    """RUN_DIR/.hydra/'s files (hydra.output_subdir=null: rundir writes them once the run's checks passed)."""
    return {"config.yaml": task_yaml,
            "hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})),
            "overrides.yaml": OmegaConf.to_yaml(OmegaConf.create(list(hc.overrides.task)))}


def job_context(task_yaml: str) -> JobContext:
    """The JobContext of the Hydra job running now (a plain JobContext outside Hydra)."""
    if not HydraConfig.initialized():
        return JobContext()
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    pinned = any(o.lstrip("+").startswith("hydra.run.dir=") for o in hc.overrides.hydra)
    launcher = hc.runtime.choices.get("hydra/launcher") or "basic"
    swept = sweep_dir_keys(Path(hc.sweep.dir)) if multirun else []
    exclude = list(hc.job.config.override_dirname.exclude_keys)
    # a sweep job is named by its swept keys (its dir too: conf/train.yaml); a single run by its overrides
    name = job_label(hc.overrides.task, swept, exclude) if swept else hc.job.override_dirname
    return JobContext(
        run_dir=Path(hc.runtime.output_dir),
        multirun=multirun,
        shares_process=multirun and launcher == "basic",
        group=Path(hc.sweep.dir).name if multirun else None,
        name=name or None,
        swept=tuple(short_names(swept)),
        choices={str(k): str(v) for k, v in hc.runtime.choices.items() if v is not None},
        trainer_option=hc.runtime.choices.get("trainer"),
        run_dir_pinned=multirun or pinned,
        overrides=tuple(hc.overrides.task),
        hydra_files=_hydra_files(hc, task_yaml) if hc.output_subdir is None else {},
        rerun=_rerun_command(hc) if multirun else (),
        cwd=Path(get_original_cwd()),
        made=None if multirun else made_for_run,
    )
