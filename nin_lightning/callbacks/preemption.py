"""Preemption (docs/scale-and-resume.md): on SIGTERM or submitit's USR2, finish the batch, save last.ckpt and
stop; submitit's requeue is deferred until the job's files are written. The SIGTERM handler only sets a flag
(Lightning's broadcast inside the signal handler deadlocks DDP ranks signalled at different points); the ranks
read it together (agreement.py)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from nin_lightning import compat
from nin_lightning.cluster.slurm import submitit_signal
from nin_lightning.errors import UserError
from nin_lightning.rundir.closing import Ending
from nin_lightning.status import say

PREEMPTED_EXIT = 143  # 128 + SIGTERM
# How long a failed W&B call waits for the SIGTERM that may explain it (W&B's service may die first).
SIGNAL_GRACE_S = 2.0
STOPPED = "stopped by SIGTERM (preemption, requeue or kill)"  # metrics.json's error of a preempted run


class Preempted(Exception):
    """Training stopped on SIGTERM (or submitit's signal) at a batch's end, on every rank."""


class PreemptionCheckpoint(Callback):
    """Saves `path` (last.ckpt) when training stops on SIGTERM, and defers submitit's requeue until after it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._deferred: tuple[Callable[..., Any], int] | None = None
        self._installed: dict[int, Any] = {}  # signal -> the handler ours replaced
        self.signalled = False  # this rank got SIGTERM (or submitit's signal)
        self.training = self.trained = False  # in the fit's epochs; after them
        self.said = False  # the stop's line is on the console (on_exception's): `watching` adds none

    def explains(self, exc: BaseException) -> bool:
        """Whether EXC is (a consequence of) the preemption signal."""
        return isinstance(exc, Preempted) or self.signalled

    def ending(self, exc: BaseException) -> Ending | None:
        """How the run ends when EXC is the signal's doing (rundir/closing.py): preempted, exit 143."""
        return Ending("preempted", STOPPED, SystemExit(PREEMPTED_EXIT)) if self.explains(exc) else None

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """SIGTERM from the run's set-up to the test's end: outside the fit's epochs (where no batch's end
        comes) it stops the run at once with one line; last.ckpt is as the fit or an earlier start left it."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, self._stop_now) if main else None
        try:
            yield
            if self.signalled:  # at the fit's very end, after its last check: the test did not see it
                raise Preempted("stopped by a signal after training")
        except BaseException:  # Preempted, or what the code it interrupted made of it (a checkpoint "corrupt")
            if self.signalled and not self.said:
                when = "after training, before the test ended" if self.trained else "before training"
                say(f"stopped by a signal {when}; resume=auto (automatic after a Slurm requeue) goes on from "
                    f"{self.path if self.path.is_file() else 'the start'}")
            raise
        finally:
            if main:  # Lightning's fit and test put back what they found: ours, which is undone here
                signal.signal(signal.SIGTERM, previous)

    def _stop_now(self, signum: int, frame: Any) -> None:
        self.signalled = True
        if not self.training:  # in the epochs, the batch's end stops the run (agreement.py)
            raise Preempted("stopped by a signal outside the fit's epochs")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.training, self.trained = False, True

    def excuses(self, exc: BaseException) -> bool:
        """Whether a failed W&B call is explained by the signal, which may still be on its way."""
        if not self.signalled:
            time.sleep(SIGNAL_GRACE_S)  # the signal handler runs during the sleep
        return self.signalled

    def _install(self, sig: int, handler: Callable[[int, Any], None]) -> None:
        if threading.current_thread() is threading.main_thread():
            self._installed[sig] = signal.signal(sig, handler)

    def _restore(self) -> None:
        """Put back the handlers ours replaced (where ours is still the one installed)."""
        for sig, previous in list(self._installed.items()):
            if threading.current_thread() is threading.main_thread() and getattr(
                    signal.getsignal(sig), "__self__", None) is self:
                signal.signal(sig, previous)
            del self._installed[sig]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        sig = submitit_signal()
        if stage == "fit" and sig is not None and callable(signal.getsignal(sig)):
            self._submitit_handler = signal.getsignal(sig)
            self._install(sig, self._defer_submitit)

    def _defer_submitit(self, signum: int, frame: Any) -> None:
        self._deferred = (self._submitit_handler, signum)
        self.signalled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.training = True
        self._install(signal.SIGTERM, self._on_sigterm)  # after Lightning registered its own handler
        if isinstance(trainer, L.Trainer):
            compat.drop_lightning_sigterm_broadcast(trainer)  # it would broadcast its replaced handler's flag

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.signalled = True

    def stop(self, trainer: L.Trainer) -> None:
        """The ranks agreed that one of them was signalled (agreement.StepAgreement): every rank stops here."""
        raise Preempted(f"stopped by a signal at epoch {trainer.current_epoch + 1}, step {trainer.global_step}")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()  # Lightning skips the teardown hooks after an exception
        if not self.explains(exception) or trainer.state.fn != "fit" or self.trained:
            return  # after the last epoch (the fit's teardown), last.ckpt holds it: `watching` says so
        self.said = True
        try:
            trainer.save_checkpoint(self.path)
        except UserError as exc:  # the state is not finite (FiniteLossGuard): the last good last.ckpt stays
            say(f"stopped by a signal, and not saved: {exc}")
            return
        say(f"stopped by a signal at epoch {trainer.current_epoch + 1}, step {trainer.global_step}: saved {self.path}; "
            "resume=auto (automatic after a Slurm requeue) continues from it")

    def hand_over(self) -> None:
        """After the job's files are written: let submitit checkpoint and requeue the job (it then exits)."""
        if self._deferred is not None:
            handler, signum = self._deferred
            self._deferred = None
            handler(signum, None)
