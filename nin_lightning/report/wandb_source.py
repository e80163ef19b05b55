"""The same Job records from W&B's public API: one per run of a group (summary + config + history)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from nin_lightning.errors import UserError
from nin_lightning.report.jobs import (
    DATA_SIZES,
    IGNORED,
    INCOMPLETE,
    METRICS,
    SIZE,
    Job,
    flatten,
    new_job,
    normalise_status,
    parse_override_dirname,
    to_float,
)

# W&B history key -> our history column (Lightning suffixes on_step/on_epoch metrics with _step/_epoch)
HISTORY_MAP = {"val/acc": "val/acc", "val/loss": "val/loss", "val/acc_best": "val/acc_best", "train/acc": "train/acc",
               "train/acc_epoch": "train/acc", "train/loss_epoch": "train/loss", "train/loss": "train/loss"}
PROBE_TIMEOUT_S = 5.0  # for an unreachable server wandb.Api() would wait out its whole timeout
parse_run_name = parse_override_dirname  # our run names are the job's overrides, 'model.dropout=0.5,seed=2'


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
        values = {ours: v for theirs, ours in HISTORY_MAP.items() if (v := to_float(rec.get(theirs), ours)) is not None}
        if values:
            merged.setdefault(epoch, {"epoch": epoch}).update(values)
    return [merged[e] for e in sorted(merged)]


def run_to_job(run: Any) -> Job:
    """A W&B run -> Job. The run's state gives the status (our jobs finish failed runs with exit code 1)."""
    flat = flatten(dict(run.config or {}))
    overrides = parse_run_name(run.name) or {k: str(v) for k, v in flat.items() if k not in IGNORED}
    summary = run.summary
    history = run_history(run.scan_history())
    status = normalise_status(run.state)  # finished, failed, crashed; else (running, killed) the summary's
    status = normalise_status(_get(summary, "status")) if status == INCOMPLETE else status
    raw = {key: _get(summary, key) for key in (*METRICS, *SIZE, *DATA_SIZES, "code/commit", "code/dirty")}
    if raw["epochs"] is None and history:
        raw["epochs"] = sum(1 for r in history if "val/acc" in r)
    if raw["wall_time_s"] is None:
        raw["wall_time_s"] = _get(summary, "_runtime")
    return new_job(run.name or run.id, overrides, flat.get("seed"), status, _get(summary, "error"), raw, flat, history)


def connect() -> Any:
    """`wandb.Api()`, once the W&B server answers at all (UserError naming the server when it does not)."""
    import requests
    import wandb

    # the SDK's server: WANDB_BASE_URL, else `wandb login --host`'s choice, else its default (public API)
    url = str(wandb.setup(wandb.Settings(silent=True)).settings.base_url)
    try:
        requests.head(url, timeout=PROBE_TIMEOUT_S)
    except requests.RequestException as exc:
        cause = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
        reason = cause.group(1).strip() if cause else type(exc).__name__
        raise UserError(f"W&B: cannot reach the server {url} ({reason}); check the network, or WANDB_BASE_URL "
                        "for a self-hosted server") from exc
    return wandb.Api(timeout=60.0)


def explain(exc: Exception, path: str) -> str:
    """One line naming the cause of a W&B API error and its fix."""
    text = " ".join(str(exc).split())
    kind = type(exc).__name__
    if kind == "UsageError" and "api key" in text.lower():
        return "W&B: no API key; run `wandb login`, or set WANDB_API_KEY"
    if "did not respond in time" in text or isinstance(exc, TimeoutError):
        return f"W&B: the server did not answer in time ({text}); check the network and try again"
    if kind == "AuthenticationError":
        return f"W&B: the API key was not accepted ({text}); run `wandb login --relogin`, or set WANDB_API_KEY"
    if "could not find project" in text.lower():
        return (f"W&B: no project {path}, or no access to it; check --wandb ENTITY/PROJECT "
                "(the part after wandb.ai/ in the project's URL)")
    return f"W&B: reading the runs of {path} failed ({kind}: {text}); check --wandb ENTITY/PROJECT and `wandb login`"


def read_wandb_group(path: str, group: str) -> list[Job]:
    """Every run of GROUP in ENTITY/PROJECT PATH; a one-line UserError (cause, fix) when unreadable or empty."""
    try:
        jobs = [run_to_job(run) for run in connect().runs(path, filters={"group": group})]
    except UserError:
        raise
    except Exception as exc:
        raise UserError(explain(exc, path)) from exc
    if not jobs:
        raise UserError(f"W&B: no runs in group {group!r} of {path}; check --group: the sweep dir's name "
                        "(e.g. dropout_2026-05-01_10-00-00-123456), as on the project's Runs page")
    return jobs
