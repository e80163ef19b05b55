"""A trained run's files as the commands on it take them, checked before torch is imported (a wrong path
fails in a second, not after torch's start-up): which checkpoint, and which dataset keys may change."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from nin_lightning.config import DatasetConfig
from nin_lightning.errors import UserError, did_you_mean
from nin_lightning.rundir import best_checkpoint, is_locked, last_checkpoint, read_metrics
from nin_lightning.rundir.layout import CHECKPOINT_DIR

SPLITS = ("test", "val")  # evaluate --split
DEFAULT_TOP = 5  # predict --top: classes per image in the CSV and on the console (fewer if the dataset has fewer)
CHECKPOINTS: dict[str, Callable[[Path], Path]] = {"best": best_checkpoint, "last": last_checkpoint}
# The dataset keys a loaded run may change, and their types: where its files are and how they are read.
# Every other key decides which images a split holds or how they look, and stays the run's.
DATASET_OVERRIDES: dict[str, type] = {"root": str, "download": bool, "eval_batch_size": int, "num_workers": int}
OVERRIDE_HINT = "dataset.root=DIR, dataset.eval_batch_size=N, dataset.num_workers=N or dataset.download=true"
# A checkpoint and the run dir it sits in must agree on these (a checkpoint copied into another run's dir).
IDENTITY_KEYS = ("name", "num_classes", "in_channels", "image_size")


def checkpoint_path(run_dir: Path, ckpt: str) -> Path:
    """RUN_DIR/checkpoints/{best,last}.ckpt; a one-line UserError that says why there is none and what to do."""
    if ckpt not in CHECKPOINTS:
        raise UserError(f"--ckpt {ckpt}: not a valid choice{did_you_mean(ckpt, CHECKPOINTS)}; choose best or last")
    if not run_dir.exists():
        raise UserError(f"{run_dir}: no such directory; pass a run dir (the hydra.run.dir of a training run, "
                        "e.g. outputs/runs/<time>)")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file; pass the run dir that holds {CHECKPOINT_DIR}/ (its parent's parent "
                        "for a checkpoint)")
    path = CHECKPOINTS[ckpt](run_dir)
    if path.is_file():
        return path
    other = next(name for name in CHECKPOINTS if name != ckpt)
    if CHECKPOINTS[other](run_dir).is_file():
        fix = f"pass --ckpt {other} (the run has {CHECKPOINT_DIR}/{other}.ckpt)"
    elif is_locked(run_dir) or read_metrics(run_dir).get("status") == "running":
        fix = "its run is still in its first epoch: wait until an epoch has ended"
    elif jobs := sorted(p.name for p in run_dir.iterdir() if (p / CHECKPOINT_DIR).is_dir()):
        fix = f"it is a sweep dir: pass one of its jobs' dirs, e.g. {run_dir / jobs[0]}"
    else:
        fix = "its run stopped before its first epoch ended, or it is not a run dir: pass the dir of a run that trained"
    raise UserError(f"{run_dir} has no {CHECKPOINT_DIR}/{ckpt}.ckpt; {fix}")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`dataset.root=DIR`-style arguments -> {"root": "DIR"}; one line for a key a loaded run cannot change."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        group, _, name = key.partition(".")
        if sep and group == "model":
            raise UserError(f"{item}: the model is the one its checkpoint holds, so model keys cannot change; "
                            "drop it")
        if not sep or group != "dataset" or name not in {f.name for f in fields(DatasetConfig)}:
            raise UserError(f"{item}: not an override these commands take; pass {OVERRIDE_HINT}")
        kind = DATASET_OVERRIDES.get(name)
        if name == "batch_size":
            raise UserError(f"{item}: dataset.batch_size is training's; these commands batch by "
                            "dataset.eval_batch_size=N")
        if kind is None:
            raise UserError(f"{item}: dataset.{name} decides which images the run's splits hold or how they look, "
                            f"so it stays the run's; drop it, or pass {OVERRIDE_HINT}")
        values[name] = _convert(item, text, kind)
    if "num_workers" in values:  # as a training start: no more DataLoader processes than CPUs
        from nin_lightning.cluster.limits import check_workers

        check_workers(values["num_workers"])
    return values


def _convert(item: str, text: str, kind: type) -> Any:
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise UserError(f"{item}: give true or false")
        return text.lower() == "true"
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise UserError(f"{item}: give a whole number, e.g. {item.partition('=')[0]}=256") from None
    return text
