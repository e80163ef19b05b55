"""Preemption: on the signal, finish the current batch, save last.ckpt, exit; the requeued job resumes.

Requeueing has exactly one owner per job, never Lightning (its SLURMEnvironment runs with
auto_requeue=False, see distributed.cluster_plugins):
- `hydra/launcher=slurm`: submitit. Shortly before the time limit (or on preemption) it sends USR2.
  We defer its handler: stop after the batch, save last.ckpt, write metrics.json, close W&B, and only
  then let submitit requeue the job (it re-runs the same pickled job, in the same job dir).
- any Slurm job: `scontrol requeue`, `scancel` or preemption with PreemptMode=REQUEUE send SIGTERM.
  Training stops after the current batch (all DDP ranks together); we save last.ckpt. Slurm
  requeues the job itself, and the restarted job (SLURM_RESTART_COUNT > 0) resumes automatically.

The SIGTERM handler only sets a flag. Lightning's own handler calls `dist.broadcast` inside the signal
handler, which deadlocks when the ranks get the signal at different points (one in a barrier, one in
a backward pass); instead the ranks agree at each training batch's end (one all-reduce of a flag) and
stop together. Slurm's SIGTERM also stops W&B's service process: W&B errors raised after the signal
are part of the preemption (the epoch's metrics stay in history.csv; the job resumes the same run).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from nin_lightning.console import say

# Exit status of a job stopped by SIGTERM (128 + 15): not a success, and Slurm requeues it anyway.
PREEMPTED_EXIT = 143


# How long a failed W&B call waits for the SIGTERM that may explain it (Slurm signals every process of
# the job at once, W&B's service may die a moment before this process runs its handler).
SIGNAL_GRACE_S = 2.0


def _submitit_signal() -> signal.Signals | None:
    """The signal submitit uses for time-outs and preemption, when this process is a submitit job."""
    if "SUBMITIT_FOLDER" not in os.environ:
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


class PreemptionCheckpoint(Callback):
    """Saves `path` (last.ckpt) when training stops on SIGTERM, and defers submitit's requeue until after it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._deferred: tuple[Callable[..., Any], int] | None = None
        self._previous: tuple[int, Any] | None = None
        self.signalled = False  # this rank got SIGTERM (or submitit's signal)

    def explains(self, exc: BaseException) -> bool:
        """Whether EXC is (a consequence of) the preemption signal."""
        return isinstance(exc, SIGTERMException) or self.signalled

    # --- submitit's signal: turn it into Lightning's graceful SIGTERM stop ---------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        sig = _submitit_signal()
        if stage != "fit" or sig is None or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(sig)
        if not callable(previous):
            return

        def defer(signum: int, frame: Any) -> None:
            self._deferred = (previous, signum)
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning: stop all ranks after the current batch

        self._previous = (sig, previous)
        signal.signal(sig, defer)

    # --- SIGTERM: a flag, then all ranks stop at the same batch ----------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():  # after Lightning registered its handler
            signal.signal(signal.SIGTERM, self._on_sigterm)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_metrics = self._tolerant(logger.log_metrics)  # type: ignore[method-assign]

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.signalled = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.strategy.reduce_boolean_decision(self.signalled, all=False):  # any rank: every rank stops
            trainer._signal_connector.received_sigterm = True  # Lightning raises SIGTERMException after the batch

    def _tolerant(self, log_metrics: Callable[..., None]) -> Callable[..., None]:
        """LOG_METRICS, but a failure that the signal explains only loses those W&B rows."""

        def log(*args: Any, **kwargs: Any) -> None:
            try:
                log_metrics(*args, **kwargs)
            except Exception:
                if not self.signalled:
                    time.sleep(SIGNAL_GRACE_S)  # the signal handler runs during the sleep
                if not self.signalled:
                    raise

        return log

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(*self._previous)
            self._previous = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not self.explains(exception) or trainer.state.fn != "fit":
            return
        trainer.save_checkpoint(self.path)
        say(f"stopped by a signal at epoch {trainer.current_epoch}, step {trainer.global_step}: saved {self.path}; "
            "resume=auto (automatic after a Slurm requeue) continues from it")

    def hand_over(self) -> None:
        """After the job's files are written: let submitit checkpoint and requeue the job (it then exits)."""
        if self._deferred is not None:
            handler, signum = self._deferred
            self._deferred = None
            handler(signum, None)
