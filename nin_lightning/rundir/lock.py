"""One owner per run dir: an exclusive lock on RUN_DIR/.lock for the life of a run.

`fcntl.flock`: the kernel drops the lock when its holder dies however it dies (kill -9, a node that is
requeued), so a stale lock of a dead process is simply taken over; no pid guessing. The file holds who
has it (pid, host, start time), for the error a second process gets.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from nin_lightning.errors import UserError
from nin_lightning.rundir.layout import LOCK_FILE


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"process {info['pid']} on host {info['host']} (since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class RunLock:
    """Held while this process trains in RUN_DIR; `release()` (or process exit) lets the next one in."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"{run_dir} is in use by {_holder(self.path)}: one process trains in a run dir at a "
                            "time; wait for it to end (or stop it), or choose another hydra.run.dir") from None
        self.fd: int | None = fd

    def record_holder(self) -> None:
        """Write who holds the lock into its file (for the error of a second process). Only once the run
        really starts: a refused start leaves every file of the run dir as it was."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
            os.pwrite(self.fd, json.dumps(info).encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None


def is_locked(run_dir: Path) -> bool:
    """Whether a live process holds RUN_DIR's lock (a run in progress), without taking it."""
    path = run_dir / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
