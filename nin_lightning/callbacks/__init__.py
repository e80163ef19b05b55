"""Every Lightning Callback of a run, and `build_callbacks`, the one place that assembles them.

checkpoints.py (best.ckpt, last.ckpt), history.py (history.csv, one logger row per epoch, the console
line, metrics.json's progress), test_curve.py (test accuracy per epoch), finite_loss.py (stop on a
non-finite loss), preemption.py (SIGTERM/submitit: save last.ckpt, stop all ranks), rng_state.py (RNG
states in checkpoints, for an exact resume).
"""

from __future__ import annotations

from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    RichProgressBar,
    TQDMProgressBar,
)

from nin_lightning.callbacks.checkpoints import checkpoint_callbacks
from nin_lightning.callbacks.finite_loss import FiniteLossGuard
from nin_lightning.callbacks.history import EpochHistory, EpochLine, LearningRates, RunProgress, best_epoch
from nin_lightning.callbacks.preemption import PREEMPTED_EXIT, Preempted, PreemptionCheckpoint
from nin_lightning.callbacks.rng_state import RNGState
from nin_lightning.callbacks.test_curve import EpochTestCurve
from nin_lightning.config import CallbacksConfig
from nin_lightning.rundir import RunDir
from nin_lightning.rundir.layout import HISTORY_FILE

__all__ = ["PREEMPTED_EXIT", "EpochHistory", "EpochLine", "EpochTestCurve", "FiniteLossGuard", "LearningRates",
           "Preempted", "PreemptionCheckpoint", "RNGState", "RunProgress", "best_epoch", "build_callbacks"]


def build_callbacks(cfg: CallbacksConfig, run: RunDir, progress: str, has_logger: bool,
                    preemption: PreemptionCheckpoint) -> list[Callback]:
    """The callbacks of a run in RUN_DIR.

    `progress`: `bar` (a terminal), `lines` (one line per epoch: logs, pipes) or `none`."""
    callbacks: list[Callback] = [*checkpoint_callbacks(run.path, cfg.monitor, cfg.mode, cfg.save_last)]
    if cfg.lr_monitor and has_logger:
        callbacks.append(LearningRates())
    if progress == "bar":
        callbacks.append(RichProgressBar(leave=True) if cfg.rich_progress_bar else TQDMProgressBar())
    elif progress == "lines":
        callbacks.append(EpochLine())
    callbacks.append(EpochHistory(run.path / HISTORY_FILE if cfg.history else None))
    if cfg.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor=cfg.monitor, mode=cfg.mode, patience=cfg.early_stopping_patience))
    if cfg.test_curve:
        callbacks.append(EpochTestCurve(run.path))
    return [*callbacks, RunProgress(run), FiniteLossGuard(), RNGState(), preemption]
