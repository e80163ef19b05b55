"""When training reads its stop flags: every N steps, all ranks at once, in one all-reduce.

A read is a host sync (the CPU waits for the GPU's queue to drain), so a step that reads nothing can run
ahead of the GPU. Two flags say "stop": a non-finite loss (FiniteLossGuard, recorded on the device) and a
preemption signal (PreemptionCheckpoint, a Python flag that its SIGTERM handler sets). Every
`callbacks.check_every_n_steps` steps the ranks combine both in ONE all-reduce and act alike, so no rank
waits in a collective of a rank that stopped; a single process also looks at its signal flag after every
step (free: no device involved). Lightning 2.6 broadcasts rank 0's SIGTERM flag by itself at every DDP
step; its handler is replaced by ours (it broadcast inside the signal handler), so that broadcast carries
nothing, and we add no other collective per step.
"""

from __future__ import annotations

from typing import Any, Protocol

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class _LossFlag(Protocol):  # FiniteLossGuard (finite_loss.py, which imports this module)
    def flag(self, device: torch.device) -> torch.Tensor: ...
    def passed(self, step: int) -> None: ...
    def stop(self, trainer: L.Trainer) -> None: ...


class _SignalFlag(Protocol):  # PreemptionCheckpoint (preemption.py)
    signalled: bool

    def stop(self, trainer: L.Trainer) -> None: ...


def any_rank(trainer: L.Trainer, flags: torch.Tensor) -> list[float]:
    """Each flag's maximum over the ranks: one all-reduce (none on one process), then one read on the host."""
    if trainer.world_size > 1:
        flags = trainer.strategy.reduce(flags, reduce_op="max")
    return flags.tolist()


class StepAgreement(Callback):
    """Every `every_n_steps` training steps: the ranks' stop flags, read together (see the module's docstring)."""

    def __init__(self, guard: _LossFlag, preemption: _SignalFlag, every_n_steps: int) -> None:
        self.guard, self.preemption, self.every_n_steps = guard, preemption, every_n_steps
        self._stop_at_next_batch = False

    def _stop(self, trainer: L.Trainer) -> None:
        """Stop here, unless this was the epoch's last batch: then the epoch ends first (its validation, its
        history.csv and W&B row, its last.ckpt) and the run stops at the next epoch's first batch. A stop at
        the last batch saved a checkpoint whose epoch had every batch trained but no end: a resume skipped
        that epoch's validation and record (history.csv lacked it)."""
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
