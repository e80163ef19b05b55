"""One start of a run in its run dir: `claim` (the lock), `plan`, `begin` (metrics.json says running), `progress`
after every epoch, `close` with its result; stopped before `begin`, `abandon` leaves the dir as it found it."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from nin_lightning.atomic_files import atomic_write
from nin_lightning.errors import UserError
from nin_lightning.rundir.layout import (
    CHECKPOINT_DIR,
    HISTORY_FILE,
    HYDRA_DIR,
    LOCK_FILE,
    LOG_FILE,
    METRICS_FILE,
    PREVIOUS_METRICS_FILE,
    WANDB_RUN_FILE,
    checkpoint_dir,
)
from nin_lightning.rundir.lock import record_holder, take_lock
from nin_lightning.rundir.metrics import read_metrics, write_metrics
from nin_lightning.rundir.start import Start, plan_start
from nin_lightning.status import open_run_logs

RUNNING = "running"
# What any run dir holds from its start on (a sweep job refused at start: .hydra/ and metrics.json)
RUN_MARKS = (METRICS_FILE, HYDRA_DIR, CHECKPOINT_DIR, HISTORY_FILE, WANDB_RUN_FILE)


class RunDir:
    """A run dir while this process owns it (rank 0), or only reads it (`owner=False`)."""

    def __init__(self, path: Path, owner: bool, lock: FileLock | None, existed: bool, found: set[str] | None) -> None:
        self.path, self.owner, self.lock, self.existed = path, owner, lock, existed
        self.found = found  # the dir's entries when it was claimed (None: it did not exist)
        self.started = time.perf_counter()
        self.earlier_wall_s = 0.0  # wall_time_s of the run's earlier starts: a resumed run adds them up
        self.at_start: dict[str, Any] = {}  # what metrics.json says from the start on (seed, speed/*, pid, ...)
        self.begun = False

    @classmethod
    def claim(cls, path: Path, owner: bool = True) -> RunDir:
        """Take RUN_DIR's lock (the owner), or not (another DDP rank of the owner's job)."""
        path = Path(path)
        found = {p.name for p in path.iterdir()} if path.is_dir() else None
        existed = bool(found and found - {LOG_FILE, LOCK_FILE})  # more than Hydra's log and a lock
        if owner and existed and not any((path / name).exists() for name in RUN_MARKS):
            raise UserError(f"{path} already holds files and is not a run dir (no {METRICS_FILE}, {HYDRA_DIR}/ or "
                            f"{CHECKPOINT_DIR}/): nothing is written there; pass hydra.run.dir=<a new or empty dir>")
        return cls(path, owner, take_lock(path) if owner else None, existed, found)

    def plan(self, resume: str, ckpt_path: str | None, now: dict[str, Any], restarts: int = 0) -> Start:
        """Where this start begins (rundir/start.py)."""
        return plan_start(self.path, resume, ckpt_path, now, restarts, owner=self.owner)

    def begin(self, start: Start, hydra_files: dict[str, str], at_start: dict[str, Any]) -> None:
        """The run starts: its .hydra/ files, metrics.json {status: running, epochs, **at_start} (an extended
        finished run's result kept as metrics.previous.json: a dead extension is never taken for it)."""
        self.begun = True
        open_run_logs()  # train.log gets its lines from now on (status.RunLogHandler)
        if not self.owner:
            return
        assert self.lock is not None
        record_holder(self.lock)
        if start.continues:
            earlier = read_metrics(self.path)
            self.earlier_wall_s = float(earlier.get("wall_time_s") or 0.0)
            if earlier.get("status") == "completed":
                atomic_write(self.path / PREVIOUS_METRICS_FILE, (self.path / METRICS_FILE).read_bytes())
        for stale in checkpoint_dir(self.path).glob(".*.tmp"):  # a checkpoint write that was killed midway
            stale.unlink(missing_ok=True)
        for name, text in hydra_files.items():
            atomic_write(self.path / HYDRA_DIR / name, text)
        self.at_start = {**at_start, "pid": os.getpid(), "host": socket.gethostname()}
        self.progress(int(start.checkpoint.get("epoch", -1)) + 1 if start.checkpoint else 0)

    def wall_time_s(self) -> float:
        """Every start's wall time so far, this one included."""
        return round(self.earlier_wall_s + time.perf_counter() - self.started, 3)

    def progress(self, epochs: int) -> None:
        """metrics.json while the run runs: how many epochs are done and the wall time so far."""
        if self.owner and self.begun:
            write_metrics(self.path, self.at_start | {"status": RUNNING, "epochs": epochs,
                                                  "wall_time_s": self.wall_time_s()})

    def close(self, metrics: dict[str, Any]) -> Path:
        """Write the run's result (rank 0) and release the lock, whatever happens while writing."""
        try:
            if self.owner:
                write_metrics(self.path, metrics | {"wall_time_s": self.wall_time_s()})
        finally:
            self.release()
        return self.path

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release(force=True)
            self.lock = None

    def discard(self) -> None:
        """A start refused after `begin` in a dir that held no run: remove what it added (the dir, if it made it)."""
        if not self.owner or self.existed:
            return
        self.release()
        for entry in self.path.iterdir() if self.path.is_dir() else []:
            if entry.name not in (self.found or set()) or entry.name == LOCK_FILE:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink(missing_ok=True)
        if not self.found and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def abandon(self, hydra_files: dict[str, str] | None = None, metrics: dict[str, Any] | None = None) -> None:
        """Stopped before `begin`: release the lock and remove a dir that held nothing; with METRICS (a sweep's
        job, which its sweep must show as failed), write them and HYDRA_FILES instead."""
        if self.owner and not self.begun and metrics is not None and not self.existed:
            open_run_logs()
            for name, text in (hydra_files or {}).items():
                atomic_write(self.path / HYDRA_DIR / name, text)
            write_metrics(self.path, metrics)
        self.release()
        if not self.owner or self.begun or self.existed or metrics is not None:
            return
        for name in (LOCK_FILE, LOG_FILE):
            (self.path / name).unlink(missing_ok=True)
        if self.path.is_dir() and not any(self.path.iterdir()):
            shutil.rmtree(self.path, ignore_errors=True)
