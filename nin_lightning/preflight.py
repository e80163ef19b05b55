"""Checks before a run dir exists: hardware the trainer asks for, a known strategy, the data files."""

from __future__ import annotations

from nin_lightning.config import TrainConfig
from nin_lightning.errors import UserError, did_you_mean


def check_strategy(strategy: str) -> None:
    """`trainer.strategy` must be `auto` or a name in Lightning's strategy registry."""
    from lightning.pytorch.strategies import StrategyRegistry

    names = StrategyRegistry.available_strategies()
    if strategy != "auto" and strategy not in names:
        raise UserError(f"trainer.strategy={strategy}: no such Lightning strategy{did_you_mean(strategy, names)}; "
                        "use auto, ddp, ddp_spawn or another of lightning's StrategyRegistry names")


def check_data_files(conf: TrainConfig) -> None:
    """Without dataset.download, files missing (or MNIST's truncated): one line now. Checksums are left to
    `load()`, which reads the files anyway."""
    if conf.dataset.download:
        return
    from nin_lightning.data import build_datamodule

    problem = build_datamodule(conf.dataset).file_problem(check_md5=False)
    if problem is not None:
        raise problem


def preflight(conf: TrainConfig) -> None:
    """Everything that can fail before any work, as one line each (the Hydra callback and run.train call it)."""
    from nin_lightning.distributed import check_devices

    check_devices(conf)  # trainer=gpu without a GPU etc.
    check_strategy(conf.trainer.strategy)
    check_data_files(conf)
