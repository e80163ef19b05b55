"""The command that continues a stopped run, for its last console line:

    python train.py <the run's overrides> resume=auto hydra.run.dir=<its dir>

The overrides are the run's own (RUN_DIR/.hydra/overrides.yaml), each quoted for the shell. Import-light.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from nin_lightning.errors import UserError
from nin_lightning.rundir.history import read_history
from nin_lightning.rundir.layout import HISTORY_FILE, HYDRA_DIR, last_checkpoint
from nin_lightning.rundir.start import may_start_again, saved_overrides

# A stopped run that resume=auto continues from its last.ckpt (a completed one has nothing left to do)
CONTINUABLE = ("interrupted", "preempted", "failed")
# Not repeated: the command sets both itself, and ckpt_path would start again from that file, not continue
DROPPED = ("resume=", "hydra.run.dir=", "ckpt_path=")


def _sweep_job(run_dir: Path) -> bool:
    """Whether RUN_DIR is a job of a `-m` sweep (its .hydra/hydra.yaml says MULTIRUN): the sweep's own
    command with resume=auto continues it, not a single run's."""
    try:
        text = (run_dir / HYDRA_DIR / "hydra.yaml").read_text()
    except OSError:
        return False
    return any(line.strip() == "mode: MULTIRUN" for line in text.splitlines())


def _starts_again(run_dir: Path) -> bool:
    """Whether resume=auto starts RUN_DIR (no last.ckpt yet: stopped in its first epoch) again, or refuses."""
    try:
        return may_start_again(run_dir, read_history(run_dir / HISTORY_FILE))
    except UserError:  # an unreadable history.csv: resume=auto says so itself
        return False


def resume_command(run_dir: Path, status: str, shown_dir: str, requeued: bool = False) -> str | None:
    """`to continue: python train.py ... resume=auto hydra.run.dir=SHOWN_DIR` for a run that stopped with
    STATUS (interrupted, preempted, failed) and that resume=auto continues: from its last.ckpt, or (stopped
    in its first epoch, not failed) from the start in the same run. None otherwise, and for a sweep's job or
    a run started without train.py. `requeued`: the job's scheduler (Slurm) restarts a
    preempted run by itself, so a preempted run needs no command."""
    if status not in CONTINUABLE or (status == "preempted" and requeued):
        return None
    if not last_checkpoint(run_dir).is_file() and (status == "failed" or not _starts_again(run_dir)):
        return None
    overrides = saved_overrides(run_dir)
    if overrides is None or _sweep_job(run_dir):
        return None
    kept = [o for o in overrides if not o.lstrip("+~").startswith(DROPPED)]
    words = ["python", "train.py", *kept, "resume=auto", f"hydra.run.dir={shown_dir}"]
    return f"to continue: {' '.join(shlex.quote(w) for w in words)}"
