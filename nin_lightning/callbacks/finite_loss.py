"""Stop a run whose loss is no longer finite, before a bad step reaches the weights or a checkpoint."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from nin_lightning.errors import UserError


class FiniteLossGuard(Callback):
    """Stop before the optimizer step when the loss is NaN/inf, so no bad weights reach a checkpoint.

    Under DDP the ranks decide together (any rank's bad loss stops all), so none waits forever in the
    gradient all-reduce of a rank that stopped."""

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss).all())
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise UserError(
                f"non-finite training loss ({loss.item()} on rank {trainer.global_rank}) at epoch "
                f"{trainer.current_epoch}, "
                f"step {trainer.global_step}; the last good checkpoint is kept. Lower optimizer.lr or "
                "set trainer.gradient_clip_val"
            )
