"""Each epoch's record: history.csv, one row to the loggers, a console line, and the run's progress."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from nin_lightning import metric_names as names
from nin_lightning.rundir import RunDir
from nin_lightning.rundir.history import read_history
from nin_lightning.status import say, show

# The epoch's record: history.csv's columns, and the callback metrics they come from.
HISTORY_COLUMNS = {"train/loss": names.TRAIN_LOSS, "train/acc": names.acc(names.TRAIN),
                   "val/loss": names.loss(names.VAL), "val/acc": names.acc(names.VAL),
                   "val/acc_best": names.VAL_ACC_BEST}
EPOCH_PREFIXES = (f"{names.TRAIN}/", f"{names.VAL}/")  # epoch metrics (not LOSS_STEP, a step metric)


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

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After a resume, drop rows of epochs that the checkpoint does not contain. (Not on_fit_start:
        # the loops, and with them trainer.current_epoch, are restored from the checkpoint after it.)
        self._epoch_start = time.perf_counter()  # a mid-epoch resume skips on_train_epoch_start
        if trainer.is_global_zero and self.path is not None and self.path.exists():
            rows = [r for r in read_history(self.path) if int(r["epoch"]) < trainer.current_epoch]
            self._write(rows, mode="w")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        row: dict[str, Any] = {"epoch": trainer.current_epoch, "step": trainer.global_step,
                               "epoch_time_s": round(time.perf_counter() - self._epoch_start, 3),
                               "lr": trainer.optimizers[0].param_groups[0]["lr"]}
        row |= {column: metrics.get(key) for column, key in HISTORY_COLUMNS.items()}
        if self.path is not None:
            self._write([row], mode="a")
        epoch_metrics = {k: v for k, v in metrics.items() if k.startswith(EPOCH_PREFIXES) and k != names.LOSS_STEP}
        self._log(trainer, epoch_metrics | {"epoch": trainer.current_epoch})

    @staticmethod
    def _log(trainer: L.Trainer, row: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(row, step=trainer.global_step)

    def _write(self, rows: list[dict[str, Any]], mode: str) -> None:
        assert self.path is not None
        fields = ["epoch", "step", "epoch_time_s", "lr", *HISTORY_COLUMNS]
        new_file = mode == "w" or not self.path.exists()
        with self.path.open(mode, newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            if new_file:
                writer.writeheader()
            writer.writerows(rows)


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
        show(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {shown} "
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
