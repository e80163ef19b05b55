"""Checkpoints as W&B model artifacts (`logger.log_model`, with Lightning's WandbLogger meaning).

- `true`: best.ckpt once, when the run has completed, aliases `best` and `epoch-N` (its epoch);
- `all`: every checkpoint as it is written: best.ckpt with `best` and `epoch-N`, last.ckpt with `last`;
- `false`: none.

The artifact is `model-<run id>` of type `model` (Lightning's name), one version per file content; W&B
adds `latest`. Offline runs keep the records in their .wandb file; `wandb sync` uploads the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

MODEL_TYPE = "model"


def artifact_name(run_id: str) -> str:
    """The model artifact of W&B run RUN_ID (Lightning's WandbLogger uses the same name)."""
    return f"model-{run_id}"


def model_artifact(run_id: str, path: Path, metadata: dict[str, Any]) -> Any:
    """A draft wandb.Artifact holding the checkpoint PATH as `model.ckpt`."""
    import wandb

    artifact = wandb.Artifact(artifact_name(run_id), type=MODEL_TYPE, metadata=metadata)
    artifact.add_file(str(path), name="model.ckpt")
    return artifact


class ModelArtifacts(Callback):
    """Logs checkpoints to RUN (a wandb.Run) as `logger.log_model` says. A Callback only to know the epoch a
    checkpoint is written in; the logger hands it each saved checkpoint (TolerantWandbLogger)."""

    def __init__(self, run: Any, mode: bool | str) -> None:
        self.run, self.mode = run, mode
        self.epoch = 0  # the epoch (from 1) being trained: a checkpoint written now holds it
        self.logged: list[tuple[str, list[str]]] = []  # (file name, aliases), in order

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch = trainer.current_epoch + 1

    def _log(self, path: Path, aliases: list[str], metadata: dict[str, Any]) -> None:
        self.run.log_artifact(model_artifact(self.run.id, path, {"epoch": self.epoch} | metadata), aliases=aliases)
        self.logged.append((path.name, aliases))

    def saved(self, checkpoint_callback: Any) -> None:
        """CHECKPOINT_CALLBACK (a ModelCheckpoint with one fixed file name) has just written its file."""
        if self.mode != "all":
            return
        path = Path(checkpoint_callback.dirpath) / f"{checkpoint_callback.filename}{checkpoint_callback.FILE_EXTENSION}"
        best = checkpoint_callback.monitor is not None
        aliases = ["best", f"epoch-{self.epoch}"] if best else ["last"]
        score = checkpoint_callback.best_model_score if best else None
        self._log(path, aliases, {"monitor": checkpoint_callback.monitor,
                                  "score": None if score is None else float(score)})

    def final(self, best: Path, best_epoch: int | None) -> None:
        """At the end of a completed run (`true`): best.ckpt once, aliases `best` and its epoch."""
        if self.mode is True and best.is_file():
            self.epoch = best_epoch or self.epoch
            self._log(best, ["best", f"epoch-{self.epoch}"], {})
