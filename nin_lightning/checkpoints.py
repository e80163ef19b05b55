"""Which checkpoint a run starts from: none, an explicit `ckpt_path`, or `resume=auto`."""

from __future__ import annotations

from pathlib import Path

from nin_lightning.errors import UserError
from nin_lightning.paths import CHECKPOINT_DIR, LAST_CKPT, METRICS_FILE


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / CHECKPOINT_DIR / LAST_CKPT


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
    if resume == "auto":
        return last if last.is_file() else None
    refuse_existing_run(run_dir)
    return None
