"""Each epoch's record (history.csv, one logger row, a console line, metrics.json's progress) and the LRs at
the logger's steps. Epochs count from 1 everywhere (docs/tracking.md): Lightning's current_epoch + 1."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from nin_lightning import metric_names as names
from nin_lightning.atomic_files import atomic_write
from nin_lightning.rundir import RunDir
from nin_lightning.rundir.history import FIELDS, HISTORY_COLUMNS, read_history
from nin_lightning.status import log_line, say

EPOCH_PREFIXES = (f"{names.TRAIN}/", f"{names.VAL}/")  # epoch metrics (not LOSS_STEP, a step metric)
LOGGED_AS = {key: column for column, key in HISTORY_COLUMNS.items()}


class EpochHistory(Callback):
    """One record per training epoch: a row of RUN_DIR/history.csv, and ONE row to the loggers.

    The module logs its epoch metrics with `logger=False`: Lightning would send them in several rows, and a
    logger stopped in between (Slurm's SIGTERM also stops W&B's service) would keep half an epoch.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: no history.csv (callbacks.history=false), rows to the loggers only
        self._epoch_start = 0.0
        self._epoch_lr: float | None = None  # the LR the epoch trains with: taken at its first batch
        self.best_epoch: int | None = None  # the epoch whose weights are best.ckpt (kept in checkpoints)
        self._best_score: float | None = None  # the best checkpoint's score when best_epoch was taken

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_train_epoch_start(trainer, pl_module)  # a mid-epoch resume skips it
        # after a resume (restored after on_fit_start): drop rows of epochs that the checkpoint does not contain
        if trainer.is_global_zero and self.path is not None and self.path.exists():
            rows = [r for r in read_history(self.path) if int(r["epoch"]) <= trainer.current_epoch]
            self._write(rows, mode="w")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._epoch_lr = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._epoch_lr is None:  # before the epoch's first optimizer step: the LR it is taken with
            self._epoch_lr = float(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        self._track_best(trainer, epoch)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        lr = self._epoch_lr if self._epoch_lr is not None else trainer.optimizers[0].param_groups[0]["lr"]
        row: dict[str, Any] = {"epoch": epoch, "step": trainer.global_step,
                               "epoch_time_s": round(time.perf_counter() - self._epoch_start, 3), names.EPOCH_LR: lr}
        row |= {column: metrics.get(key) for column, key in HISTORY_COLUMNS.items()}
        if self.path is not None:
            self._write([row], mode="a")
        epoch_metrics = {LOGGED_AS.get(k, k): v for k, v in metrics.items()
                         if k.startswith(EPOCH_PREFIXES) and k != names.LOSS_STEP}
        for logger in trainer.loggers:
            logger.log_metrics(epoch_metrics | {names.EPOCH_LR: lr, names.EPOCH: epoch}, step=trainer.global_step)

    def _track_best(self, trainer: L.Trainer, epoch: int) -> None:
        """Whether best.ckpt takes this epoch, as ModelCheckpoint decides (strictly better; its hooks run last)."""
        best = trainer.checkpoint_callback
        monitor = getattr(best, "monitor", None)
        value = trainer.callback_metrics.get(monitor) if monitor else None
        if value is None or not math.isfinite(current := float(value)):
            return
        if self._best_score is None or (current > self._best_score if best.mode == "max"
                                        else current < self._best_score):
            self.best_epoch, self._best_score = epoch, current

    def state_dict(self) -> dict[str, Any]:
        return {"best_epoch": self.best_epoch, "best_score": self._best_score}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_epoch, self._best_score = state_dict.get("best_epoch"), state_dict.get("best_score")

    def _write(self, rows: list[dict[str, Any]], mode: str) -> None:
        """Append ROWS (mode `a`), or replace the file by them (mode `w`: whole, or not at all)."""
        assert self.path is not None
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=FIELDS)
        if mode == "w" or not self.path.exists():
            writer.writeheader()
        writer.writerows(rows)
        if mode == "w":
            atomic_write(self.path, text.getvalue())
            return
        with self.path.open("a", newline="") as fh:
            fh.write(text.getvalue())


class LearningRates(Callback):
    """Each param group's LR at the logger's steps as lr/pg0, lr/pg1, ...: the same keys for every optimizer."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if not trainer.is_global_zero or (trainer.global_step + 1) % trainer.log_every_n_steps:
            return
        row = {names.lr(i): float(group["lr"]) for i, group in enumerate(trainer.optimizers[0].param_groups)}
        for logger in trainer.loggers:
            logger.log_metrics(row, step=trainer.global_step)


def best_epoch(trainer: L.Trainer) -> int | None:
    """The epoch (from 1) whose weights are best.ckpt, as the run's EpochHistory saw it (None without one)."""
    return next((c.best_epoch for c in trainer.callbacks if isinstance(c, EpochHistory)), None)


class EpochLine(Callback):
    """One line per epoch (rank 0) where stdout is not a terminal (Slurm logs, pipes), instead of a bar."""

    KEYS = (names.TRAIN_LOSS, names.acc(names.TRAIN), names.loss(names.VAL), names.acc(names.VAL))

    def __init__(self) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        shown = ", ".join(f"{k.replace('_epoch', '')} {float(metrics[k]):.4f}" for k in self.KEYS if k in metrics)
        log_line(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {shown} "
             f"({time.perf_counter() - self._epoch_start:.1f} s)")


class RunProgress(Callback):
    """After every epoch, metrics.json says how far the run got; a failed write (a full disk) is said once."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.failed = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        try:
            self.run.progress(trainer.current_epoch + 1)
        except OSError as exc:
            if not self.failed:
                say(f"could not update {self.run.path / 'metrics.json'} ({exc.strerror}); it still says the run is "
                    "running, with the epochs of its last update")
            self.failed = True
