"""Hydra callbacks: check the composed config before Hydra makes any directory."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict

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
        if run_dir is not None:  # before Hydra rewrites the run dir's .hydra/ files:
            from nin_lightning.resume import plan_start

            _, finished = plan_start(conf.resume, conf.ckpt_path, to_plain_dict(task), run_dir, quiet=True)
            if finished is not None:  # a finished run: left exactly as it is
                sys.exit(0)
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
