"""File names inside a run directory (kept import-light: used before torch is loaded)."""

CHECKPOINT_DIR = "checkpoints"
LAST_CKPT = "last.ckpt"
BEST_CKPT = "best.ckpt"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
WANDB_RUN_FILE = "wandb_run.json"  # the W&B run of this dir: id, group, name (kept across resumes)
