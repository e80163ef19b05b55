"""Status lines for the user: through `logging`, so the command line decides where they go.

Under Hydra's job logging (conf/hydra/job_logging/nin.yaml) they reach the console as plain lines and
RUN_DIR/train.log with a timestamp. Outside it (a notebook, a test calling `run.train`), a handler of our
own prints them on stdout, as Lightning does for its lines. A leaf module: no package imports.
"""

from __future__ import annotations

import logging
import sys
import weakref
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger("nin_lightning")


class _OwnHandler(logging.StreamHandler):
    """Ours, used only while nothing configured logging (so it is dropped again once something did)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:  # the stdout of the moment (a test's capture, a redirect)
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _route() -> None:
    """Propagate to the root logger's handlers when there are any; else print on stdout ourselves."""
    own = [h for h in LOGGER.handlers if isinstance(h, _OwnHandler)]
    if logging.getLogger().handlers:
        for handler in own:
            LOGGER.removeHandler(handler)
        LOGGER.propagate = True
    elif not own:
        handler = _OwnHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(handler)
        LOGGER.setLevel(logging.INFO)
        LOGGER.propagate = False


def _rank() -> int:
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0))


def log_line(line: str) -> None:
    """LINE as it is (e.g. an epoch's line), from any rank: on the console and in the run's log file (`say` is
    rank 0's, with the [nin] prefix)."""
    _route()
    LOGGER.info(line)


def say(message: str) -> None:
    """`[nin] MESSAGE`, from rank 0 only: what happens and what to do about it."""
    if _rank() == 0:
        log_line(f"[nin] {message}")


def to_log_files(line: str, level: int = logging.ERROR) -> None:
    """LINE into the log files of the root logger only (RUN_DIR/train.log under Hydra), not the console:
    a failed run's `error:` line, which the command line prints on stderr itself."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    record = LOGGER.makeRecord(LOGGER.name, level, __file__, 0, line, None, None)
    for handler in handlers:
        handler.handle(record)


_RUN_LOGS: weakref.WeakSet[RunLogHandler] = weakref.WeakSet()


class RunLogHandler(logging.FileHandler):
    """RUN_DIR/train.log (conf/hydra/job_logging/nin.yaml): holds its lines until the run begins.

    Hydra opens the job's log before the job has checked anything. Lines logged before the run begins
    (`open_run_logs`, called by rundir when it starts writing the run dir) wait in memory: a start that is
    refused leaves an earlier run's log untouched, and one that fails its checks leaves no log at all."""

    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None, errors: str | None = None
                 ) -> None:
        super().__init__(filename, mode, encoding, delay=True, errors=errors)
        self.held: list[logging.LogRecord] | None = []
        _RUN_LOGS.add(self)

    def emit(self, record: logging.LogRecord) -> None:
        if self.held is None:
            super().emit(record)
        elif len(self.held) < 10_000:
            self.held.append(record)

    def start(self) -> None:
        held, self.held = self.held or [], None
        for record in held:
            super().emit(record)


def open_run_logs() -> None:
    """The run has begun: its log files get the lines held so far, and every line from now on."""
    for handler in list(_RUN_LOGS):
        handler.start()


def shown_path(path: Path) -> str:
    """PATH relative to the working dir when it is inside it (shorter on the console), else absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
