"""The names of the metrics the LightningModule logs, defined once for the module, the config's monitor checks,
history.csv and the trackers (`tests/test_module.py` checks that every name `monitorable` accepts is logged)."""

from __future__ import annotations

TRAIN, VAL, TEST = "train", "val", "test"

LOSS_STEP = "train/loss_step"  # the training loss of one step, at the logger's steps
TRAIN_LOSS = "train/loss_epoch"  # the mean training loss of an epoch
VAL_ACC_BEST = "val/acc_best"  # the best val/acc so far (the sweeps' objective)
TOP5_FROM_CLASSES = 11  # top-5 accuracy is logged for datasets with more classes than 10

# The two x-axes of every chart (W&B's define_metric; docs/tracking.md). EPOCH counts from 1: the row of
# epoch N is written when N epochs are done (console, history.csv, W&B and the report's plots agree).
EPOCH = "epoch"
GLOBAL_STEP = "trainer/global_step"  # optimizer steps so far (Lightning's WandbLogger adds it to each row)
LR_PREFIX = "lr"  # the learning rate of param group i, at the logger's steps: lr/pg0, lr/pg1, ...
EPOCH_LR = "lr"  # the LR an epoch trained with (param group 0): history.csv's column and the epoch's W&B row
BEST_EPOCH = "best_epoch"  # the epoch whose weights are best.ckpt (the ones the test scores)


def loss(stage: str) -> str:
    """val/loss, test/loss (training's: TRAIN_LOSS and LOSS_STEP)."""
    return TRAIN_LOSS if stage == TRAIN else f"{stage}/loss"


def acc(stage: str) -> str:
    """train/acc, val/acc, test/acc: top-1 accuracy."""
    return f"{stage}/acc"


def acc5(stage: str) -> str:
    """train/acc5, val/acc5, test/acc5: top-5 accuracy (more than 10 classes)."""
    return f"{stage}/acc5"


def lr(group: int) -> str:
    """lr/pg0, lr/pg1: one key per param group, the same for every optimizer (not Lightning's lr-SGD)."""
    return f"{LR_PREFIX}/pg{group}"


def has_top5(num_classes: int) -> bool:
    return num_classes >= TOP5_FROM_CLASSES


def epoch_metrics(stage: str, num_classes: int) -> tuple[str, ...]:
    """What the module logs once per epoch for STAGE."""
    names = (loss(stage), acc(stage)) + ((acc5(stage),) if has_top5(num_classes) else ())
    return (*names, VAL_ACC_BEST) if stage == VAL else names


# Every epoch metric a checkpoint, early stopping or a plateau scheduler may follow, and its direction.
MONITOR_MODES = {acc(VAL): "max", loss(VAL): "min", acc5(VAL): "max", acc(TRAIN): "max", TRAIN_LOSS: "min",
                 acc5(TRAIN): "max"}


def monitorable(num_classes: int) -> tuple[str, ...]:
    """The names callbacks.monitor accepts for a dataset with NUM_CLASSES classes."""
    logged = set(epoch_metrics(TRAIN, num_classes)) | set(epoch_metrics(VAL, num_classes))
    return tuple(name for name in MONITOR_MODES if name in logged)
