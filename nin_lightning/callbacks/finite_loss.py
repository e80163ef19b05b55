"""Stop a run whose training is no longer finite, and never write a checkpoint from such a state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from nin_lightning import metric_names as names
from nin_lightning.errors import UserError
from nin_lightning.rundir.checkpoint_io import load_checkpoint_file
from nin_lightning.rundir.layout import last_checkpoint
from nin_lightning.rundir.start import original_overrides


def any_rank(trainer: L.Trainer, flags: torch.Tensor) -> list[float]:
    """Each flag's maximum over the ranks: one all-reduce (none on one process), then one read on the host."""
    if trainer.world_size > 1:
        flags = trainer.strategy.reduce(flags, reduce_op="max")
    return flags.tolist()


class FiniteLossGuard(Callback):
    """A diverged run stops in one line that names the last good checkpoint; none is written from a bad state.

    Each step records on the device whether its loss was finite (no host sync); the record is read every
    `callbacks.check_every_n_steps` steps (StepAgreement), at each epoch's end and before any checkpoint, where a
    non-finite val loss or weight also counts (`lr=1e6` without BatchNorm: a NaN val loss, a finite train loss).
    """

    def __init__(self, run_dir: Path | None = None) -> None:
        self.run_dir, self.last_ckpt = run_dir, last_checkpoint(run_dir) if run_dir is not None else None
        self._bad: torch.Tensor | None = None  # bool: a non-finite loss since `_since`
        self._clean: torch.Tensor | None = None  # steps since `_since` before the first non-finite loss
        self._first: torch.Tensor | None = None  # the first non-finite loss (nan or inf)
        self._since = 0  # global step of the last read that found nothing

    def _reset(self, device: torch.device, step: int) -> None:
        self._bad = torch.zeros((), dtype=torch.bool, device=device)
        self._clean = torch.zeros((), dtype=torch.int64, device=device)
        self._first = torch.zeros((), dtype=torch.float32, device=device)
        self._since = step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset(pl_module.device, trainer.global_step)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if self._bad is None or self._bad.device != loss.device:
            self._reset(loss.device, trainer.global_step)
        assert self._clean is not None and self._first is not None
        bad = ~torch.isfinite(loss.detach())
        self._first = torch.where(bad & ~self._bad, loss.detach().float(), self._first)
        self._bad |= bad
        self._clean += (~self._bad).long()

    def flag(self, device: torch.device) -> torch.Tensor:
        """1.0 when this rank saw a non-finite training loss since the last read, else 0.0 (on DEVICE)."""
        if self._bad is None:
            return torch.zeros((), device=device)
        return self._bad.to(device=device, dtype=torch.float32)

    def passed(self, step: int) -> None:
        """A read found every rank finite up to STEP: the next one counts from there."""
        if self._bad is not None:
            self._reset(self._bad.device, step)

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Training loss, weights and the last validation loss: all finite on every rank, or a UserError."""
        device = pl_module.device

        def nonfinite(tensors: list[torch.Tensor]) -> torch.Tensor:
            finite = [torch.isfinite(t.detach()).all().to(device) for t in tensors]
            return (~torch.stack(finite).all()).float() if finite else torch.zeros((), device=device)

        weights = [t for t in (*pl_module.parameters(), *pl_module.buffers()) if t.is_floating_point()]
        val_loss = trainer.callback_metrics.get(names.loss(names.VAL))
        flags = torch.stack([self.flag(device), nonfinite([] if val_loss is None else [val_loss]), nonfinite(weights)])
        train, val, weights_flag = any_rank(trainer, flags)
        if train:
            self.stop(trainer)
        if val:
            self._fail(f"non-finite validation loss ({float(val_loss)}) at epoch {trainer.current_epoch + 1}")
        if weights_flag:
            self._fail(f"non-finite weights at epoch {trainer.current_epoch + 1}, step {trainer.global_step}")
        self.passed(trainer.global_step)

    def stop(self, trainer: L.Trainer) -> None:
        """Some rank saw a non-finite training loss (the ranks agreed on it): stop, naming the first one."""
        if self._bad is not None and bool(self._bad):
            step = self._since + int(self._clean)
            what = (f"({float(self._first)} on rank {trainer.global_rank}) at epoch {trainer.current_epoch + 1}, "
                    f"step {step}")
        else:
            what = f"(on another rank) by epoch {trainer.current_epoch + 1}, step {trainer.global_step}"
        self._fail(f"non-finite training loss {what}")

    def _fail(self, what: str) -> None:
        raise UserError(f"{what}; no checkpoint was written from this state{self._good_checkpoint()}")

    def _good_checkpoint(self) -> str:
        fix = "lower optimizer.lr or set trainer.gradient_clip_val"
        if self.last_ckpt is None or not self.last_ckpt.is_file():
            return f", and none was written before it: start again and {fix}"
        try:
            saved = load_checkpoint_file(self.last_ckpt)
            epoch = saved.get("epoch")  # 0-based in the checkpoint; messages count epochs from 1, like history.csv
            at = f" (saved at epoch {int(epoch) + 1 if epoch is not None else '?'}, step {saved.get('global_step')})"
        except UserError:
            at = ""
        where = f" hydra.run.dir={self.run_dir}" if self.run_dir is not None else ""
        started = original_overrides(self.run_dir) if self.run_dir is not None else ""
        return (f"; {self.last_ckpt}{at} is the last good one: resume from it and {fix}, e.g. python train.py "
                f"resume=auto{where} optimizer.lr=<lower>{started}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.check(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
                           ) -> None:
        """Every checkpoint (best, last, a preemption's) is written only from a finite state."""
        if trainer.state.fn == "fit":
            self.check(trainer, pl_module)
