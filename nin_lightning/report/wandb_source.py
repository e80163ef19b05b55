"""The same Job records from W&B's public API: one per run of a group (summary + config + history)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from nin_lightning.report.jobs import OK, Job, normalise_status, to_float

# W&B history key -> our history column (Lightning suffixes on_step/on_epoch metrics with _step/_epoch)
HISTORY_MAP = {"val/acc": "val/acc", "val/loss": "val/loss", "val/acc_best": "val/acc_best", "train/acc": "train/acc",
               "train/acc_epoch": "train/acc", "train/loss_epoch": "train/loss", "train/loss": "train/loss"}
STATES = {"finished": OK, "failed": "failed", "crashed": "failed"}  # anything else: incomplete
_OVERRIDE_SPLIT = re.compile(r",(?=[+~]*[A-Za-z_][\w./-]*=)")


def parse_run_name(name: str) -> dict[str, str]:
    """Our run names are the job's overrides, 'model.dropout=0.5,seed=2'; {} for any other name."""
    pairs = [part.partition("=") for part in _OVERRIDE_SPLIT.split(name or "")]
    if not pairs or not all(sep for _, sep, _ in pairs):
        return {}
    return {key.lstrip("+~"): value for key, _, value in pairs}


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'model': {'dropout': 0.5}} -> {'model.dropout': '0.5'}."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if str(key).startswith("_"):
            continue
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def _get(mapping: Any, key: str) -> Any:
    try:
        return mapping[key]
    except (KeyError, TypeError, IndexError):
        return None


def run_history(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, float]]:
    """History rows (one per logged step) -> one merged row per epoch, in our column names."""
    merged: dict[float, dict[str, float]] = {}
    for rec in rows:
        epoch = to_float(rec.get("epoch"))
        if epoch is None:
            continue
        values = {ours: v for theirs, ours in HISTORY_MAP.items() if (v := to_float(rec.get(theirs))) is not None}
        if values:
            merged.setdefault(epoch, {"epoch": epoch}).update(values)
    return [merged[e] for e in sorted(merged)]


def run_to_job(run: Any) -> Job:
    """A W&B run -> Job. The run's state gives the status (our jobs finish failed runs with exit code 1)."""
    config = dict(run.config or {})
    overrides = parse_run_name(run.name) or flatten(config)
    if "seed" not in overrides and config.get("seed") is not None:
        overrides["seed"] = str(config["seed"])
    summary = run.summary
    history = run_history(run.scan_history())
    status = STATES.get(str(run.state)) or normalise_status(_get(summary, "status"))
    epochs = to_float(_get(summary, "epochs"))
    if epochs is None and history:
        epochs = float(sum(1 for r in history if "val/acc" in r))
    wall = to_float(_get(summary, "wall_time_s"))
    metrics = {
        "val/acc_best": to_float(_get(summary, "val/acc_best")),
        "test/acc": to_float(_get(summary, "test/acc")),
        "epochs": epochs,
        "wall_time_s": wall if wall is not None else to_float(_get(summary, "_runtime")),
    }
    return Job(name=run.name or run.id, overrides=overrides, status=status, metrics=metrics, history=history,
               error=_get(summary, "error"))


def read_wandb_group(path: str, group: str, api: Any = None) -> list[Job]:
    """Every run of `group` in ENTITY/PROJECT `path`, through `wandb.Api()` (or the `api` given)."""
    if api is None:
        import wandb

        api = wandb.Api(timeout=60)
    runs = list(api.runs(path, filters={"group": group}))
    if not runs:
        raise LookupError(f"no W&B runs in group {group!r} of {path}")
    return [run_to_job(run) for run in runs]
