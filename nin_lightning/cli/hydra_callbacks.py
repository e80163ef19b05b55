"""Hydra callbacks: check a sweep before its first job, save a search's multirun.yaml, note a run's new dirs."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from nin_lightning.cli.errors import fail, wants_traceback
from nin_lightning.cli.job_dirs import check_job_dirs
from nin_lightning.cli.options import refuse_schema_choices
from nin_lightning.config import validate
from nin_lightning.config.sweep import MULTIRUN_FILE, override_parser
from nin_lightning.errors import UserError
from nin_lightning.rundir.layout import HYDRA_DIR


def task_config(config: DictConfig) -> DictConfig:
    """A copy of Hydra's full config without its `hydra` node."""
    task = config.copy()
    with open_dict(task):
        task.pop("hydra", None)
    return task


def _check_each_swept_value(config: DictConfig) -> None:
    """The base config with each value of each swept config key on the command line in turn, so a bad value late in
    a grid fails before the first job. Not group choices (Hydra composes their configs per job), intervals (a search
    samples them), nor added or deleted keys (checked when their job composes)."""
    base = task_config(config)
    for override in override_parser().parse_overrides(list(config.hydra.overrides.task)):
        key = override.get_key_element()
        if not override.is_sweep_override() or override.is_interval_sweep() or override.is_hydra_override():
            continue
        if key.startswith(("+", "~")) or key in config.hydra.runtime.choices:
            continue
        if isinstance(OmegaConf.select(base, key), DictConfig):
            continue  # a config group (dataset=mnist,cifar10)
        for value in override.sweep_string_iterator():
            task = task_config(config)
            try:
                task.merge_with_dotlist([f"{key}={value}"])
            except Exception as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UserError(f"{key}={value} (a value of the sweep): {reason}; fix or drop that value") from exc
            validate(task)


class ValidateOnStart(Callback):
    """Before a sweep's first job: its base config, each swept value in turn, and its jobs' dir names."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns exceptions in callbacks into warnings, so exit here.
        try:
            refuse_schema_choices(config.hydra.runtime.choices)
            validate(task_config(config))
            _check_each_swept_value(config)
            check_job_dirs(config)  # names the filesystem refuses, before the sweeper makes any dir
            sweep_dir = Path(str(config.hydra.sweep.dir))
            if (sweep_dir / HYDRA_DIR).is_dir():
                raise UserError(f"hydra.sweep.dir={sweep_dir} is a single run's dir (it has .hydra/): a sweep there "
                                "would put its jobs inside that run; give the sweep a dir of its own")
        except UserError as exc:
            if wants_traceback():
                traceback.print_exc()
            fail(str(exc))


class RunDirMade(Callback):
    """Before Hydra makes a single run's dir: note the outermost dir it makes, which a refused start removes."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from nin_lightning.cli import hydra_job
        from nin_lightning.rundir.closing import first_missing

        run_dir = Path(str(config.hydra.run.dir)).absolute()
        if run_dir.exists() and not run_dir.is_dir():  # before Hydra's mkdir, whose error names no fix
            fail(f"hydra.run.dir={config.hydra.run.dir} is a file, not a directory; give a run dir (a new one, or "
                 "a run's dir with resume=auto)")
        hydra_job.made_for_run = first_missing(run_dir)


class SweepConfigSaved(Callback):
    """SWEEP_DIR/multirun.yaml for sweepers that save none (Optuna's): job names and the report read it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if str(config.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper"):
            return  # it saves its own
        if str(config.hydra.launcher.get("_target_", "")).endswith(".DryLauncher"):
            return  # a dry run makes no dir (hydra/launcher=dry, dry_local)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, sweep_dir / MULTIRUN_FILE)
