"""What a run directory holds. Every path is relative to it, so a run dir can be moved or copied and resumed."""

from __future__ import annotations

from pathlib import Path

DEFAULT_RUN_DIR = Path("outputs/run")  # where `run.train` writes when a job names no dir
CHECKPOINT_DIR = "checkpoints"
LAST_CKPT = "last.ckpt"  # after every epoch (and on preemption): what resume=auto continues from
CONFIG_KEY = "nin_config"  # in each checkpoint: the run's config, what resume compares (rundir/start.py)
BEST_CKPT = "best.ckpt"  # the best epoch by callbacks.monitor: what the test phase scores
METRICS_FILE = "metrics.json"  # flat: status, test/acc, val/acc_best, epochs, wall_time_s, seed, ...
PREVIOUS_METRICS_FILE = "metrics.previous.json"  # a finished run's result, while it is being extended
HISTORY_FILE = "history.csv"  # one row per epoch
WANDB_RUN_FILE = "wandb_run.json"  # the W&B run of this dir: id, group, name (kept across resumes)
HYDRA_DIR = ".hydra"  # config.yaml, hydra.yaml, overrides.yaml of the run's latest start
OVERRIDES_FILE = "overrides.yaml"  # in HYDRA_DIR: the command-line overrides of that start
LOCK_FILE = ".lock"  # held by the one process that trains in this dir (rundir/lock.py)
LOG_FILE = "train.log"  # Hydra's job log (conf/hydra/job_logging/nin.yaml)
# What the commands on a trained run write (inference/): the only places in a run dir they write to
EVAL_DIR = "eval"  # RUN_DIR/eval/<ckpt>_<split>[_tta]/
PREDICTIONS_DIR = "predictions"  # RUN_DIR/predictions/<time>.csv
EXPORT_DIR = "export"  # RUN_DIR/export/<ckpt>.onnx
COMMAND_DIRS = (EVAL_DIR, PREDICTIONS_DIR, EXPORT_DIR)


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINT_DIR


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / CHECKPOINT_DIR / LAST_CKPT


def best_checkpoint(run_dir: Path) -> Path:
    return run_dir / CHECKPOINT_DIR / BEST_CKPT
