"""One owner per run dir: a `filelock` flock on RUN_DIR/.lock, dropped by the kernel when its holder dies (no
soft fallback: it would outlive a kill -9); the file is kept and names the holder, for a second process's error."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from filelock import FileLock, Timeout

from nin_lightning.errors import UserError
from nin_lightning.rundir.layout import LOCK_FILE

# non-blocking, the file kept (its holder's record), never a soft lock
FLOCK = {"timeout": 0, "thread_local": False, "preserve_lock_file": True, "fallback_to_soft": False}


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"process {info['pid']} on host {info['host']} (since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def take_lock(run_dir: Path) -> FileLock:
    """RUN_DIR's lock, held until `release(force=True)` or this process's end; a UserError naming its holder."""
    path = run_dir / LOCK_FILE
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, **FLOCK)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"{run_dir} is in use by {_holder(path)}: one process trains in a run dir at a "
                        "time; wait for it to end (or stop it), or choose another hydra.run.dir") from None
    return lock


def record_holder(lock: FileLock) -> None:
    """Write who holds LOCK into its file, once the run begins (a refused start changes no file)."""
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    Path(lock.lock_file).write_text(json.dumps(info))  # another descriptor: the flock stays with the lock's


def is_locked(run_dir: Path) -> bool:
    """Whether a live process holds RUN_DIR's lock (a run in progress): taken and let go at once if free."""
    path = run_dir / LOCK_FILE
    if not path.exists():
        return False
    try:
        with FileLock(path, **FLOCK):
            return False
    except Timeout:
        return True
