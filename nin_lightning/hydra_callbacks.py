"""Hydra callbacks: check the composed config before Hydra makes any directory."""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict

from nin_lightning.checkpoints import last_checkpoint, refuse_existing_run
from nin_lightning.config import to_plain_dict, validate
from nin_lightning.errors import UserError, fail, wants_traceback


def task_config(config: DictConfig) -> DictConfig:
    """A copy of Hydra's full config without its `hydra` node."""
    task = config.copy()
    with open_dict(task):
        task.pop("hydra", None)
    return task


def _validate_or_exit(config: DictConfig, run_dir: Path | None = None) -> None:
    # Hydra turns exceptions in callbacks into warnings, so exit here (SystemExit passes through).
    try:
        task = task_config(config)
        conf = validate(task)
        restarted = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0  # a requeued Slurm job resumes
        if run_dir is not None:  # before Hydra rewrites its .hydra/ files:
            if conf.resume != "auto" and not restarted:
                refuse_existing_run(run_dir)  # never overwrite a run
            elif conf.ckpt_path is None and last_checkpoint(run_dir).is_file():
                from nin_lightning.resume import check_resume  # imports torch: only when resuming

                check_resume(last_checkpoint(run_dir), to_plain_dict(task), run_dir, same_run=False)
    except UserError as exc:
        if wants_traceback():
            traceback.print_exc()
        fail(str(exc))


class ValidateOnStart(Callback):
    """Range-check the config at the start of a run or sweep (swept values are checked per job)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _validate_or_exit(config, Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _validate_or_exit(config)
