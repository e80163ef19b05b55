"""RUN_DIR/history.csv: one row per epoch (callbacks/history.py appends them)."""

from __future__ import annotations

import csv
from pathlib import Path

from nin_lightning import metric_names as names
from nin_lightning.errors import UserError

# history.csv's columns and the callback metrics they come from (callbacks/history.py); the loggers get the same names
HISTORY_COLUMNS = {"train/loss": names.TRAIN_LOSS, "train/acc": names.acc(names.TRAIN),
                   "val/loss": names.loss(names.VAL), "val/acc": names.acc(names.VAL),
                   "val/acc_best": names.VAL_ACC_BEST}
FIELDS = ["epoch", "step", "epoch_time_s", names.EPOCH_LR, *HISTORY_COLUMNS]
FIX = "restore it, or delete it to keep only the epochs trained from now on"


def read_history(path: Path) -> list[dict[str, str]]:
    """The whole rows of PATH ([] without it; a last row cut short by a crash is dropped); UserError when it is not
    CSV text, or a row before the last is not whole (a row dropped there would leave a gap in the epochs)."""
    if not path.exists():
        return []
    try:
        text = path.read_text()
        if "\0" in text:
            raise ValueError("it holds NUL bytes")
        rows = list(csv.DictReader(text.splitlines()))
    except (UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise UserError(f"{path} is not a readable history ({type(exc).__name__}: {str(exc)[:80]}); {FIX}") from exc
    whole = [None not in row.values() and None not in row and str(row.get("epoch", "")).isdigit() for row in rows]
    if False in whole[:-1]:
        raise UserError(f"{path}: row {whole.index(False) + 1} is not a whole row of an epoch; {FIX}")
    return [row for row, ok in zip(rows, whole, strict=True) if ok]


def check_epochs(path: Path, rows: list[dict[str, str]], done: int, mid_epoch: bool | None = None) -> None:
    """Before a resume from a checkpoint of DONE epochs (one fewer if saved MID_EPOCH; None: unknown, either): the
    rows of PATH up to it are epochs 1, 2, ... once each, so the rows appended next leave no gap; else a UserError
    naming what is wrong."""
    if not path.exists():  # never written (callbacks.history=false), or deleted: the epochs from now on
        return
    extra = [column for column in (rows[0] if rows else {}) if column not in FIELDS]
    if extra:  # its rows are rewritten with train's columns on resume: the user's own would be lost
        raise UserError(f"{path} has columns that train.py does not write ({', '.join(extra)}); move them to a file of "
                        "their own, then resume")
    epochs = [int(row["epoch"]) for row in rows if int(row["epoch"]) <= done]
    if epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= done - (mid_epoch is not False):
        return
    at = next((i for i, epoch in enumerate(epochs, 1) if epoch != i), len(epochs) + 1)  # the first row out of line
    if at <= len(epochs) and epochs[at - 1] < at:
        wrong = f"epoch {epochs[at - 1]} is repeated or out of order"
    else:
        wrong = f"epoch {at} is {'out of order' if at in epochs else 'missing'}"
    raise UserError(f"{path}: {wrong}, but the checkpoint holds {done} epochs; {FIX}")
