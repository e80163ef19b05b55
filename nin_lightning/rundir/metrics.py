"""RUN_DIR/metrics.json: the run's state and result, flat, written atomically by rank 0."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from nin_lightning.atomic_files import atomic_write
from nin_lightning.rundir.layout import METRICS_FILE


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/metrics.json, or {} when there is none (or it is unreadable)."""
    try:
        data = json.loads((run_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> Path:
    """Write metrics.json (keys sorted, tensors as numbers, NaN as null) atomically."""
    flat = {k: _clean(v) for k, v in sorted(metrics.items())}
    return atomic_write(run_dir / METRICS_FILE, json.dumps(flat, indent=2) + "\n")
