"""Progress bars that read their metrics (the step loss included) at the logger's steps and outside training
only: Lightning's turn every value into a float after each batch, a host sync per step."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from nin_lightning import metric_names as names


class _ReadAtLogSteps:
    """`get_metrics` from the cache between the logger's steps (a mixin before a Lightning progress bar)."""

    _shown: dict[str, Any] | None = None

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        fresh = not trainer.training or self._shown is None or trainer.global_step % trainer.log_every_n_steps == 0
        if fresh:
            self._shown = super().get_metrics(trainer, pl_module)  # type: ignore[misc]
            step_loss = trainer.callback_metrics.get(names.LOSS_STEP) if trainer.training else None
            if step_loss is not None:
                self._shown[names.LOSS_STEP] = round(float(step_loss), 4)
        assert self._shown is not None
        return self._shown


class QuietRichProgressBar(_ReadAtLogSteps, RichProgressBar):
    """RichProgressBar without a sync per step."""


class QuietTQDMProgressBar(_ReadAtLogSteps, TQDMProgressBar):
    """TQDMProgressBar without a sync per step."""
