"""Everything about a run directory: its files (layout.py), metrics.json (metrics.py), checkpoint IO
(checkpoint_io.py, imports torch; written whole by nin_lightning/atomic_files.py), the lock that gives it one
owner (lock.py), and where a run starts (start.py: the one place resume is decided); run_dir.py ties them together.
Importing this package does not import torch."""

from nin_lightning.rundir.layout import best_checkpoint, checkpoint_dir, last_checkpoint
from nin_lightning.rundir.lock import RunLock, is_locked
from nin_lightning.rundir.metrics import read_metrics, write_metrics
from nin_lightning.rundir.run_dir import RUNNING, RunDir
from nin_lightning.rundir.start import Start, changed_keys, check_not_a_copy, plan_start, snapshot

__all__ = [
    "RUNNING", "RunDir", "RunLock", "Start", "best_checkpoint", "changed_keys", "check_not_a_copy",
    "checkpoint_dir", "is_locked", "last_checkpoint", "plan_start", "read_metrics", "snapshot", "write_metrics",
]
