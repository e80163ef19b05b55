"""Lightning callbacks built from `callbacks` config: checkpoints, LR, progress, history."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)

from nin_lightning.config import CallbacksConfig
from nin_lightning.console import show
from nin_lightning.paths import BEST_CKPT, CHECKPOINT_DIR, HISTORY_FILE, LAST_CKPT

# The epoch's record: history.csv's columns, and the callback metrics they come from.
HISTORY_COLUMNS = {"train/loss": "train/loss_epoch", "train/acc": "train/acc", "val/loss": "val/loss",
                   "val/acc": "val/acc", "val/acc_best": "val/acc_best"}
EPOCH_PREFIXES = ("train/", "val/")  # epoch-level callback metrics (train/loss_step is a step metric)


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
            with self.path.open() as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) < trainer.current_epoch]
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
        epoch_metrics = {k: v for k, v in metrics.items() if k.startswith(EPOCH_PREFIXES) and not k.endswith("_step")}
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

    KEYS = ("train/loss_epoch", "train/acc", "val/loss", "val/acc")

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


def build_callbacks(cfg: CallbacksConfig, run_dir: Path, progress: str, has_logger: bool) -> list[Callback]:
    """The callbacks of a run; checkpoints are RUN_DIR/checkpoints/{best,last}.ckpt.

    `progress`: `bar` (a terminal), `lines` (one line per epoch: logs, pipes) or `none`."""
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=run_dir / CHECKPOINT_DIR,
            filename=Path(BEST_CKPT).stem,
            monitor=cfg.monitor,
            mode=cfg.mode,
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
    ]
    if cfg.save_last:
        # last.ckpt after EVERY epoch, for resume=auto. Not ModelCheckpoint(save_last=True): Lightning 2.6
        # writes that one only in epochs where the monitored metric improved (i.e. a copy of best.ckpt).
        callbacks.append(ModelCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, filename=Path(LAST_CKPT).stem,
                                         monitor=None, save_top_k=1, enable_version_counter=False))
    if cfg.lr_monitor and has_logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if progress == "bar":
        callbacks.append(RichProgressBar(leave=True) if cfg.rich_progress_bar else TQDMProgressBar())
    elif progress == "lines":
        callbacks.append(EpochLine())
    callbacks.append(EpochHistory(run_dir / HISTORY_FILE if cfg.history else None))
    if cfg.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor=cfg.monitor, mode=cfg.mode, patience=cfg.early_stopping_patience))
    if cfg.test_curve:
        from nin_lightning.curves import EpochTestCurve

        callbacks.append(EpochTestCurve(run_dir))
    return callbacks
