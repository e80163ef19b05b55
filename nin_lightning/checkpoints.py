"""Which checkpoint a run starts from: none, an explicit `ckpt_path`, or `resume=auto`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nin_lightning.errors import UserError
from nin_lightning.paths import BEST_CKPT, CHECKPOINT_DIR, LAST_CKPT, METRICS_FILE


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / CHECKPOINT_DIR / LAST_CKPT


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/metrics.json, or {} when there is none (or it is unreadable)."""
    try:
        return json.loads((run_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def refuse_existing_run(run_dir: Path) -> None:
    """Stop (one line) when `run_dir` already holds a run: a new run must never overwrite it."""
    if last_checkpoint(run_dir).exists() or (run_dir / METRICS_FILE).exists():
        raise UserError(
            f"{run_dir} already holds a run; pass resume=auto to continue it, or choose another hydra.run.dir"
        )


def resolve_start(run_dir: Path, resume: str, ckpt_path: str | None) -> Path | None:
    """The checkpoint to resume from, or None for a fresh start. Refuses to overwrite an earlier run."""
    if ckpt_path is not None:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise UserError(f"ckpt_path={ckpt_path}: no such file; pass an existing .ckpt, or drop ckpt_path")
        return path
    last = last_checkpoint(run_dir)
    if resume != "auto":
        refuse_existing_run(run_dir)
        return None
    if last.is_file():
        return last
    if (run_dir / CHECKPOINT_DIR / BEST_CKPT).exists() or read_metrics(run_dir).get("status") == "completed":
        raise UserError(f"resume=auto: {run_dir} holds a run but no {CHECKPOINT_DIR}/{LAST_CKPT} to continue from "
                        "(callbacks.save_last=false?); start it again in another hydra.run.dir, or pass "
                        f"ckpt_path={run_dir / CHECKPOINT_DIR / BEST_CKPT} with a new run dir")
    return None  # nothing to continue yet (e.g. preempted before the first epoch ended): a fresh start
