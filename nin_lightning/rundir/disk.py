"""Free space where the run writes."""

from __future__ import annotations

import shutil
from pathlib import Path

from nin_lightning.status import say


def warn_if_low_disk(run_dir: Path, min_free_gb: float) -> float:
    """Warn (one line) when the run dir's filesystem has less than `min_free_gb` free; return free GB."""
    free_gb = shutil.disk_usage(run_dir).free / 1e9
    if free_gb < min_free_gb:
        say(f"warning: only {free_gb:.2f} GB free in {run_dir} (< callbacks.min_free_disk_gb={min_free_gb}); "
            "checkpoints may fail to save")
    return free_gb
