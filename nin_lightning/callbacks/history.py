"""Each epoch's record: history.csv, one row to the loggers, a console line, and the run's progress; the
learning rates at the logger's steps.

Epochs count from 1 everywhere (metric_names.EPOCH): the record of epoch N is written when N epochs are
done, so history.csv's `epoch`, W&B's `epoch`, the console's `epoch N/E` and metrics.json's `epochs` and
`best_epoch` agree (Lightning's own `trainer.current_epoch` is N - 1 during epoch N)."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from nin_lightning import metric_names as names
from nin_lightning.rundir import RunDir
from nin_lightning.rundir.history import read_history
from nin_lightning.status import log_line, say

# The epoch's record: history.csv's columns, and the callback metrics they come from.
HISTORY_COLUMNS = {"train/loss": names.TRAIN_LOSS, "train/acc": names.acc(names.TRAIN),
                   "val/loss": names.loss(names.VAL), "val/acc": names.acc(names.VAL),
                   "val/acc_best": names.VAL_ACC_BEST}
EPOCH_PREFIXES = (f"{names.TRAIN}/", f"{names.VAL}/")  # epoch metrics (not LOSS_STEP, a step metric)
# The loggers get history.csv's names: one name per metric in W&B, history.csv and the console.
LOGGED_AS = {key: column for column, key in HISTORY_COLUMNS.items()}


def learning_rates(trainer: L.Trainer) -> dict[str, float]:
    """{lr/pg0: ..., lr/pg1: ...}: each param group's LR now, named the same for every optimizer."""
    optimizer = trainer.optimizers[0]
    return {names.lr(i): float(group["lr"]) for i, group in enumerate(optimizer.param_groups)}


class EpochHistory(Callback):
    """One record per training epoch, written to every sink at once: a row of RUN_DIR/history.csv (the
    report's learning curves), and ONE row to the loggers with every epoch metric.

    The module logs its epoch metrics with `logger=False`, so that Lightning does not send them in
    several rows (validation's, then training's): a logger stopped in between (Slurm's SIGTERM also
    stops W&B's service) would keep half an epoch. Here an epoch's row reaches a logger whole or not
    at all, and holds the same values as history.csv. (The test's metrics are one row already.)
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: no history.csv (callbacks.history=false), rows to the loggers only
        self._epoch_start = 0.0
        self._epoch_lr: float | None = None  # the LR the epoch trains with: taken at its first batch
        self.best_epoch: int | None = None  # the epoch whose weights are best.ckpt (kept in checkpoints)
        self._best_score: float | None = None  # the best checkpoint's score when best_epoch was taken

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After a resume, drop rows of epochs that the checkpoint does not contain. (Not on_fit_start:
        # the loops, and with them trainer.current_epoch, are restored from the checkpoint after it.)
        self._epoch_start = time.perf_counter()  # a mid-epoch resume skips on_train_epoch_start
        self._epoch_lr = None
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
        epoch = trainer.current_epoch + 1  # epochs count from 1 (module docstring)
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
        self._log(trainer, epoch_metrics | {names.EPOCH_LR: lr, names.EPOCH: epoch})

    def _track_best(self, trainer: L.Trainer, epoch: int) -> None:
        """Whether best.ckpt takes this epoch: its monitored value is strictly better than the best so far,
        as ModelCheckpoint decides (a tie keeps the earlier epoch). Decided here, not read from the
        checkpoint callback: Lightning runs ModelCheckpoint's hooks after every other callback's."""
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

    @staticmethod
    def _log(trainer: L.Trainer, row: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(row, step=trainer.global_step)

    def _write(self, rows: list[dict[str, Any]], mode: str) -> None:
        assert self.path is not None
        fields = ["epoch", "step", "epoch_time_s", names.EPOCH_LR, *HISTORY_COLUMNS]
        new_file = mode == "w" or not self.path.exists()
        with self.path.open(mode, newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            if new_file:
                writer.writeheader()
            writer.writerows(rows)


class LearningRates(Callback):
    """Each param group's LR at the logger's steps (`trainer.log_every_n_steps`, as train/loss_step), as
    lr/pg0, lr/pg1, ... against trainer/global_step: the same keys for SGD and AdamW, so an optimizer
    ablation's LR curves share one chart (Lightning's LearningRateMonitor names them lr-SGD, lr-AdamW)."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if not trainer.is_global_zero or (trainer.global_step + 1) % trainer.log_every_n_steps:
            return
        row = learning_rates(trainer)
        for logger in trainer.loggers:
            logger.log_metrics(row, step=trainer.global_step)


def best_epoch(trainer: L.Trainer) -> int | None:
    """The epoch (from 1) whose weights are best.ckpt, as the run's EpochHistory saw it (None without one)."""
    return next((c.best_epoch for c in trainer.callbacks if isinstance(c, EpochHistory)), None)


class EpochLine(Callback):
    """One line per epoch on stdout (rank 0) where stdout is not a terminal (Slurm logs, pipes), in which
    a progress bar's redraws would become hundreds of lines."""

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
    """After every epoch, metrics.json says how far the run got (epochs, wall time; status running).

    Best effort: a write that fails (a full disk) leaves the previous, still true, state and is said once;
    the checkpoint written next reports the disk itself."""

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
