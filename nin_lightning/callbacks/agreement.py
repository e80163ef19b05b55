"""When training reads its stop flags (non-finite loss, preemption signal): every N steps, all ranks at once,
in one all-reduce, so that no rank waits in a collective of a rank that stopped and no other step syncs."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from nin_lightning.callbacks.finite_loss import FiniteLossGuard, any_rank
from nin_lightning.callbacks.preemption import PreemptionCheckpoint


class StepAgreement(Callback):
    """Every `every_n_steps` training steps: the ranks' stop flags, read together (a single process also reads
    its signal flag after every step: no device involved)."""

    def __init__(self, guard: FiniteLossGuard, preemption: PreemptionCheckpoint, every_n_steps: int) -> None:
        self.guard, self.preemption, self.every_n_steps = guard, preemption, every_n_steps
        self._stop_at_next_batch = False

    def _stop(self, trainer: L.Trainer) -> None:
        """Stop here, unless this was the epoch's last batch: then the epoch ends first (its validation,
        history.csv row and last.ckpt) and the run stops at the next epoch's first batch."""
        if trainer.is_last_batch:
            self._stop_at_next_batch = True
        else:
            self.preemption.stop(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._stop_at_next_batch:  # every rank alike: they agreed at the same batch
            self._stop_at_next_batch = False
            self.preemption.stop(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            device = pl_module.device
            signalled = torch.full((), float(self.preemption.signalled), device=device)  # a fill, not a copy
            bad, stop = any_rank(trainer, torch.stack([self.guard.flag(device), signalled]))
            if bad:
                self.guard.stop(trainer)
            self.guard.passed(trainer.global_step)
            if stop:
                self._stop(trainer)
        elif trainer.world_size == 1 and self.preemption.signalled:
            self._stop(trainer)
