"""Everything about a run directory (docs/architecture.md). Importing this package does not import torch."""

from nin_lightning.rundir.layout import best_checkpoint, checkpoint_dir, last_checkpoint
from nin_lightning.rundir.lock import is_locked
from nin_lightning.rundir.metrics import read_metrics, write_metrics
from nin_lightning.rundir.run_dir import RUNNING, RunDir
from nin_lightning.rundir.start import Start, changed_keys, check_not_a_copy, plan_start, snapshot

__all__ = ["RUNNING", "RunDir", "Start", "best_checkpoint", "changed_keys", "check_not_a_copy", "checkpoint_dir",
           "is_locked", "last_checkpoint", "plan_start", "read_metrics", "snapshot", "write_metrics"]
