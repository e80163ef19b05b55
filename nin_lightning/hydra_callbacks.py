"""Hydra callbacks: check the composed config before Hydra makes any directory."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from nin_lightning.config import validate


def task_config(config: DictConfig) -> DictConfig:
    """A copy of Hydra's full config without its `hydra` node."""
    task = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
    task = config.copy()
    with open_dict(task):
        task.pop("hydra", None)
    return task


class ValidateOnStart(Callback):
    """Range-check the config at the start of a run or sweep (sweep values are checked per job)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        validate(task_config(config))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        validate(task_config(config))
