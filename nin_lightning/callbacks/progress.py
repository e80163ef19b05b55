"""Progress bars that read their metrics at the logger's steps only.

Lightning's bars refresh their metrics after every batch, and each refresh turns every shown value into
a Python float (`.item()`): a device-to-host sync per training step. Here the values are read at the
steps where the module logs anyway (`trainer.log_every_n_steps`) and outside training; the bar itself
(position, speed) still moves every batch.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar


class _ReadAtLogSteps:
    """`get_metrics` from the cache between the logger's steps (a mixin before a Lightning progress bar)."""

    _shown: dict[str, Any] | None = None

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        fresh = not trainer.training or self._shown is None or trainer.global_step % trainer.log_every_n_steps == 0
        if fresh:
            self._shown = super().get_metrics(trainer, pl_module)  # type: ignore[misc]
        assert self._shown is not None
        return self._shown


class QuietRichProgressBar(_ReadAtLogSteps, RichProgressBar):
    """RichProgressBar without a sync per step."""


class QuietTQDMProgressBar(_ReadAtLogSteps, TQDMProgressBar):
    """TQDMProgressBar without a sync per step."""
