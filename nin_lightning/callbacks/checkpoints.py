"""RUN_DIR/checkpoints/best.ckpt and last.ckpt (paths that follow a moved run dir); how often to validate."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from nin_lightning import metric_names as names
from nin_lightning.atomic_files import make_durable
from nin_lightning.rundir.layout import BEST_CKPT, LAST_CKPT, checkpoint_dir

_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


class RelocatableCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose saved absolute paths are rebased onto this run dir on load: after a move,
    Lightning's would forget the best score (a worse epoch overwrites best.ckpt) and test the old best.ckpt."""

    @functools.cached_property
    def state_key(self) -> str:
        # ModelCheckpoint's own key (older checkpoints restore into it), computed once: Lightning asks at every hook
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:

            def here(path: Any) -> Any:
                if isinstance(path, str) and path and Path(path).parent == Path(old):
                    return str(Path(self.dirpath) / Path(path).name)
                return path

            state_dict = {**state_dict, "dirpath": self.dirpath, **{k: here(state_dict.get(k)) for k in _PATH_KEYS
                                                                    if k in state_dict}}
            state_dict["best_k_models"] = {here(k): v for k, v in (state_dict.get("best_k_models") or {}).items()}
        super().load_state_dict(state_dict)


class BestCheckpoint(RelocatableCheckpoint):
    """best.ckpt, made durable once when fit ends; a run started from another run's checkpoint (`ckpt_path=`,
    a new run dir) starts its best afresh (the other's best score would keep every epoch here from being saved)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        fresh = (self.best_model_path, self.best_model_score, dict(self.best_k_models), self.kth_best_model_path,
                 self.kth_value)
        super().load_state_dict(state_dict)
        if self.best_model_path and not Path(self.best_model_path).is_file():
            (self.best_model_path, self.best_model_score, self.best_k_models, self.kth_best_model_path,
             self.kth_value) = fresh

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.best_model_path and Path(self.best_model_path).is_file():
            make_durable(Path(self.best_model_path))


class LastCheckpoint(RelocatableCheckpoint):
    """last.ckpt at an epoch's end when `every_s` seconds passed since the previous one (0: every epoch), and
    always after the last epoch; rank 0's clock decides for every rank."""

    def __init__(self, every_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(save_on_train_epoch_end=True, **kwargs)  # also in epochs without validation
        self.every_s = every_s
        self._written = time.monotonic()
        self._pending = False  # an epoch ended since the last write

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._written, self._pending = time.monotonic(), False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last_epoch = trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1
        due = self.every_s <= 0 or last_epoch or trainer.should_stop or time.monotonic() - self._written >= self.every_s
        if trainer.world_size > 1:
            due = trainer.strategy.broadcast(due, src=0)
        if not due:
            self._pending = True
            return
        super().on_train_epoch_end(trainer, pl_module)
        self._written, self._pending = time.monotonic(), False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Training stopped after an epoch that was not saved (a scheduler's stop): last.ckpt holds it too."""
        if self._pending and self.dirpath:
            trainer.save_checkpoint(Path(self.dirpath) / LAST_CKPT)
            self._pending = False


class ValidateEveryNEpochs(Callback):
    """Validation after every N-th epoch and the last (Lightning's `check_val_every_n_epoch` skips the last unless
    N divides max_epochs); an epoch without it drops the val/ values, lest history.csv and W&B repeat them."""

    def __init__(self, every_n_epochs: int) -> None:
        self.every_n_epochs = every_n_epochs

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_train_epoch_start(trainer, pl_module)  # a run resumed mid-epoch skips that epoch's start hook

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and 0 < trainer.max_epochs <= epoch + 1
        due = last or (epoch + 1) % self.every_n_epochs == 0
        trainer.check_val_every_n_epoch = 1 if due else epoch + 2  # Lightning's (epoch + 1) % n is not 0
        if not due:
            metrics = trainer.callback_metrics  # the Trainer's own dict: what every later reader sees
            for key in [k for k in metrics if k.startswith(f"{names.VAL}/")]:
                del metrics[key]


def checkpoint_callbacks(run_dir: Path, monitor: str, mode: str, save_last: bool, last_every_s: float = 0.0
                         ) -> list[ModelCheckpoint]:
    """best.ckpt by `monitor`; last.ckpt after every epoch or every LAST_EVERY_S seconds (not save_last=True,
    which Lightning 2.6 writes only in epochs where the monitored metric improved)."""
    dirpath = checkpoint_dir(run_dir)
    best = BestCheckpoint(dirpath=dirpath, filename=Path(BEST_CKPT).stem, monitor=monitor, mode=mode,
                          save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False)
    if not save_last:
        return [best]
    last = LastCheckpoint(last_every_s, dirpath=dirpath, filename=Path(LAST_CKPT).stem, enable_version_counter=False)
    return [best, last]
