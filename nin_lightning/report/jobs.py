"""One record per job of a sweep, read from its job dir (metrics.json, .hydra/, history.csv)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

METRICS = ("val/acc_best", "test/acc", "epochs", "wall_time_s")
HISTORY_KEYS = ("epoch", "step", "epoch_time_s", "lr", "train/loss", "train/acc", "val/loss", "val/acc",
                "val/acc_best")
OK, FAILED, INCOMPLETE = "completed", "failed", "incomplete"


@dataclass
class Job:
    """A job of a sweep: its swept settings, outcome, final metrics and learning curve."""

    name: str
    overrides: dict[str, str]
    status: str = INCOMPLETE
    metrics: dict[str, float | None] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the job completed (only those enter the means)."""
        return self.status == OK


def normalise_status(status: Any) -> str:
    """completed / failed stay; anything else (interrupted, preempted, running, none) is incomplete."""
    text = str(status or "").lower()
    if text in (OK, "finished"):
        return OK
    if text in (FAILED, "crashed"):
        return FAILED
    return INCOMPLETE


def to_float(value: Any) -> float | None:
    """A finite float, or None for blanks, text and NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """Hydra override lines ('model.dropout=0.5', '+x=1', 'scheduler=cosine') -> {key: value}."""
    out: dict[str, str] = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        if sep:
            out[key.lstrip("+~")] = value
    return out


def read_history(path: Path) -> list[dict[str, float]]:
    """history.csv -> one dict per epoch with the numeric columns (blank cells dropped)."""
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        clean = {k: to_float(row.get(k)) for k in HISTORY_KEYS}
        out.append({k: v for k, v in clean.items() if v is not None})
    return [r for r in out if "epoch" in r]


def _read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def read_job(job_dir: Path) -> Job:
    """A job dir -> Job. No metrics.json means the job never finished (incomplete)."""
    overrides = parse_overrides(_read_yaml(job_dir / ".hydra" / "overrides.yaml") or [])
    config = _read_yaml(job_dir / ".hydra" / "config.yaml") or {}
    metrics_path = job_dir / "metrics.json"
    raw: dict[str, Any] = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    seed = raw.get("seed", config.get("seed") if isinstance(config, dict) else None)
    if "seed" not in overrides and seed is not None:
        overrides["seed"] = str(seed)
    return Job(
        name=job_dir.name,
        overrides=overrides,
        status=normalise_status(raw.get("status")),
        metrics={k: to_float(raw.get(k)) for k in METRICS},
        history=read_history(job_dir / "history.csv"),
        error=raw.get("error"),
    )


def _job_order(path: Path) -> tuple[int, str]:
    head = path.name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, path.name)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's job dirs (those Hydra wrote a .hydra/ into), in job order."""
    dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    return sorted(dirs, key=_job_order)


def read_sweep_dir(sweep_dir: Path) -> list[Job]:
    """Every job of a sweep dir; raises FileNotFoundError when there is none."""
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such directory")
    dirs = job_dirs(sweep_dir)
    if not dirs:
        raise FileNotFoundError(f"{sweep_dir}: no job dirs (sub-directories with a .hydra/ folder)")
    return [read_job(d) for d in dirs]
