"""Status lines through `logging`: under Hydra's job logging to the console and RUN_DIR/train.log, else on stdout
(a notebook, a test calling `run.train`). A leaf module: no package imports."""

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


def log_line(line: str) -> None:
    """LINE as it is (e.g. an epoch's line), from any rank: on the console and in the run's log file."""
    _route()
    LOGGER.info(line)


def say(message: str) -> None:
    """`[nin] MESSAGE`, from rank 0 only: what happens and what to do about it."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    if int(getattr(rank_zero_only, "rank", 0)) == 0:
        log_line(f"[nin] {message}")


def to_log_files(line: str, level: int = logging.ERROR) -> None:
    """LINE into the root logger's log files only (RUN_DIR/train.log under Hydra), not the console."""
    record = LOGGER.makeRecord(LOGGER.name, level, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


_RUN_LOGS: weakref.WeakSet[RunLogHandler] = weakref.WeakSet()


class RunLogHandler(logging.FileHandler):
    """RUN_DIR/train.log (conf/hydra/job_logging/nin.yaml): its lines wait in memory until the run begins
    (`open_run_logs`), so a refused start leaves an earlier run's log untouched, and a failed check no log."""

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
