"""Which x-axis each logged metric is charted against in W&B, and what its summary keeps (define_metric).

Without these records every chart's x-axis is `_step`, a count of log calls: it differs between jobs with
different steps per epoch, and a resumed offline segment starts it at 0 again. `epoch` and
`trainer/global_step` are values of the training itself, restored from the checkpoint on a resume, so the
curves of every job and every segment line up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nin_lightning import metric_names as names


@dataclass(frozen=True)
class Axis:
    """One define_metric call: NAME (a glob when it ends in *) against STEP_METRIC, keeping SUMMARY."""

    name: str
    step_metric: str | None = None
    summary: str | None = None  # None: W&B's default, the last value
    hidden: bool = False  # the axes themselves get no chart of their own


def _epoch_metric(name: str, summary: str | None = None) -> Axis:
    return Axis(name, names.EPOCH, summary)


# Explicit names before the globs that also match them: W&B applies an explicit definition over a glob.
AXES: tuple[Axis, ...] = (
    Axis(names.EPOCH, hidden=True),
    Axis(names.GLOBAL_STEP, hidden=True),
    Axis(names.LOSS_STEP, names.GLOBAL_STEP),  # one step's loss: a step metric among the train/* epoch ones
    Axis(f"{names.LR_PREFIX}/*", names.GLOBAL_STEP),  # lr/pg0 ...: per-step schedules (warm-up, one-cycle)
    _epoch_metric(names.EPOCH_LR),  # the LR each epoch trained with, as in history.csv
    # The best epoch is what a reader of an accuracy column wants; val/acc_best is a running max already.
    _epoch_metric(names.acc(names.VAL), "max"),
    _epoch_metric(names.acc5(names.VAL), "max"),
    _epoch_metric(names.loss(names.VAL), "min"),
    _epoch_metric(f"{names.TRAIN}/*"),
    _epoch_metric(f"{names.VAL}/*"),
    _epoch_metric(f"{names.TEST}/*"),  # the test's one row holds `epoch` too (the epochs trained)
)


def define_axes(run: Any) -> None:
    """Send every definition to the W&B run (a `metric` record each, in the run's file)."""
    for axis in AXES:
        run.define_metric(axis.name, step_metric=axis.step_metric, summary=axis.summary,
                          hidden=axis.hidden or None)
