"""wandb-osh (`logger.osh=true`): compute nodes without internet ask a login node to upload offline runs.

After each epoch, and once more when the run has finished, the job writes a command file into
`logger.osh_dir` (a directory that the login node sees too); `wandb-osh`, started on the login node with
`--command-dir` set to the same directory, runs `wandb sync` on the run it names. docs/tracking.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class OshSync(Callback):
    """Triggers wandb-osh's sync of RUN (a wandb.Run in offline mode) into COMMAND_DIR."""

    def __init__(self, run: Any, command_dir: Path | None) -> None:
        from wandb_osh.hooks import TriggerWandbSyncHook

        self.run_dir = Path(run.dir).parent  # run.dir is the run's files/ folder; wandb sync takes its parent
        # None: wandb-osh's own default, ~/.wandb_osh_command_dir
        self.hook = TriggerWandbSyncHook(command_dir) if command_dir else TriggerWandbSyncHook()

    def trigger(self) -> None:
        """Ask the login node to sync the run now (a command file; the syncer deletes it when done)."""
        self.hook(self.run_dir)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:  # after EpochHistory logged the epoch
            self.trigger()
