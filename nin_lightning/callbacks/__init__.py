from __future__ import annotations

from lightning.pytorch.callbacks import Callback, EarlyStopping

from nin_lightning.callbacks.agreement import StepAgreement
from nin_lightning.callbacks.checkpoints import ValidateEveryNEpochs, checkpoint_callbacks
from nin_lightning.callbacks.finite_loss import FiniteLossGuard
from nin_lightning.callbacks.history import EpochHistory, EpochLine, LearningRates, RunProgress, best_epoch
from nin_lightning.callbacks.preemption import PREEMPTED_EXIT, Preempted, PreemptionCheckpoint
from nin_lightning.callbacks.progress import QuietRichProgressBar, QuietTQDMProgressBar
from nin_lightning.callbacks.rng_state import RNGState
from nin_lightning.callbacks.test_curve import EpochTestCurve
from nin_lightning.config import CallbacksConfig
from nin_lightning.rundir import RunDir
from nin_lightning.rundir.layout import HISTORY_FILE

__all__ = ["PREEMPTED_EXIT", "EpochHistory", "EpochLine", "EpochTestCurve", "FiniteLossGuard", "LearningRates",
           "Preempted", "PreemptionCheckpoint", "RNGState", "RunProgress", "StepAgreement", "best_epoch",
           "build_callbacks", "stop_guards"]


def stop_guards(preemption: PreemptionCheckpoint, every_n_steps: int, run: RunDir | None = None) -> list[Callback]:
    """FiniteLossGuard, first (it runs before the callbacks that record an epoch), and its StepAgreement."""
    guard = FiniteLossGuard(run.path if run else None)
    return [guard, StepAgreement(guard, preemption, every_n_steps)]


def build_callbacks(cfg: CallbacksConfig, run: RunDir, progress: str, has_logger: bool,
                    preemption: PreemptionCheckpoint) -> list[Callback]:
    """The callbacks of a run in RUN_DIR; `progress`: `bar` (a terminal), `lines` (logs, pipes) or `none`."""
    callbacks: list[Callback] = [*stop_guards(preemption, cfg.check_every_n_steps, run)]
    callbacks += checkpoint_callbacks(run.path, cfg.monitor, cfg.mode, cfg.save_last,
                                      last_every_s=60.0 * cfg.last_ckpt_every_n_minutes)
    if cfg.val_every_n_epochs > 1:
        callbacks.append(ValidateEveryNEpochs(cfg.val_every_n_epochs))
    if cfg.lr_monitor and has_logger:
        callbacks.append(LearningRates())
    if progress == "bar":
        callbacks.append(QuietRichProgressBar(leave=True) if cfg.rich_progress_bar else QuietTQDMProgressBar())
    elif progress == "lines":
        callbacks.append(EpochLine())
    callbacks.append(EpochHistory(run.path / HISTORY_FILE if cfg.history else None))
    if cfg.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor=cfg.monitor, mode=cfg.mode, patience=cfg.early_stopping_patience))
    if cfg.test_curve:
        callbacks.append(EpochTestCurve(run.path))
    return [*callbacks, RunProgress(run), RNGState(), preemption]
