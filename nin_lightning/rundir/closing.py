"""The end of one start of a run, whatever ends it: the one place a begun run is closed (docs/failing-safely.md).

    with RunClosing(run, at_start, keep_refused=job.multirun) as closing:
        closing.judge(...)           # how an exception reads (preempted, a dead DDP rank, ...); else failed
        closing.on_close(...)        # what must run after metrics.json whatever happened, the latest first
        closing.fitting()            # from here on a refusal is a failure of the run, not a dir to remove
        closing.completed(metrics)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf

from nin_lightning.config import JobContext
from nin_lightning.errors import UserError, one_line
from nin_lightning.rundir.layout import DEFAULT_RUN_DIR, METRICS_FILE
from nin_lightning.rundir.run_dir import RunDir
from nin_lightning.status import say, shown_path, to_log_files


class Ending(NamedTuple):
    """What an exception that ended the run means; `raises`: what to raise instead (None: the exception)."""

    status: str
    error: str
    raises: BaseException | None = None


def interrupted(exc: BaseException) -> Ending | None:
    """Ctrl-C, or a signal turned into SystemExit: the run was interrupted, not broken."""
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return Ending("interrupted", "stopped by the user (Ctrl-C) or a signal")
    return None


class RunClosing:
    """Owns the end of a begun run (rank 0 writes; the other ranks only run the closers)."""

    def __init__(self, run: RunDir, at_start: dict[str, Any], keep_refused: bool = False,
                 made: Path | None = None) -> None:
        self.run, self.keep_refused, self.made = run, keep_refused, made
        self.metrics: dict[str, Any] = {"status": "failed", **at_start}
        self.exit_code = 1
        self._judges: list[Callable[[BaseException], Ending | None]] = []
        self._closers: list[Callable[[RunClosing], None]] = []
        self._fitting = False
        self.closing_error: OSError | None = None
        self.written: Path | None = None  # the run dir, once its final metrics.json is written
        self.raising: BaseException | None = None  # what leaves the block (the closers may add a note to it)

    def judge(self, read: Callable[[BaseException], Ending | None]) -> None:
        """READ(exc) says what EXC means (None: not its kind); the first judge that knows wins, the latest first."""
        self._judges.insert(0, read)

    def on_close(self, closer: Callable[[RunClosing], None]) -> None:
        """CLOSER(self) runs after metrics.json is written, whatever happened; the last registered runs first."""
        self._closers.insert(0, closer)

    def fitting(self) -> None:
        """Training starts: from now on a refusal is recorded as the run's failure."""
        self._fitting = True

    def completed(self, metrics: dict[str, Any]) -> None:
        self.metrics |= metrics
        self.metrics["status"], self.exit_code = "completed", 0

    @property
    def status(self) -> str:
        return str(self.metrics["status"])

    def __enter__(self) -> RunClosing:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        raises = None
        self.raising = exc
        if exc is not None:
            self.exit_code = self.exit_code or 1
            ending = next((e for e in (judge(exc) for judge in [*self._judges, interrupted]) if e), None)
            status, error, raises = ending or Ending("failed", one_line(exc))
            self.raising = raises or exc
            self.metrics |= {"status": status, "error": error}
            if self._refused(exc):  # the closers run (W&B, ranks), then the dir goes, and the parents made for it
                for closer in self._closers:
                    self._run(closer)
                self.run.discard()
                remove_empty_parents(self.run.path, self.made)
                return False
        self._close()
        if raises is not None:
            raise raises from exc
        if exc is None and self.closing_error is not None:  # the run went well; its metrics.json did not
            raise self.closing_error
        return False

    def _refused(self, exc: BaseException) -> bool:
        """A refusal before training in a dir this start made (a single run's): the dir goes again."""
        return (isinstance(exc, UserError) and self.status == "failed" and not self._fitting and not self.run.existed
                and not self.keep_refused and self.run.owner)

    def _close(self) -> None:
        """metrics.json (an error writing it is kept: every closer still runs), the outcome's line, the closers."""
        path = self.run.path / METRICS_FILE
        try:
            self.run.close(self.metrics)
            self.written = self.run.path if self.run.owner else None
        except OSError as exc:
            self.closing_error = exc
            say(f"could not write {path}: {one_line(exc)}")
        acc = self.metrics.get("test/acc")
        say(f"{self.status}: test/acc={'-' if acc is None else f'{float(acc):.4f}'} -> {shown_path(path)}")
        if self.metrics.get("error") and self.run.owner:
            to_log_files(f"error: {self.metrics['error']}")
        for closer in self._closers:
            self._run(closer)

    def _run(self, closer: Callable[[RunClosing], None]) -> None:
        try:
            closer(self)
        except Exception as exc:  # one closer's failure must not skip the others; it is told
            if self.exit_code == 0:
                raise
            say(f"while closing the run: {one_line(exc)}")


def first_missing(path: Path) -> Path | None:
    """The outermost dir of PATH that does not exist yet (what a `mkdir -p PATH` would create), or None."""
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def remove_empty_parents(path: Path, made: Path | None) -> None:
    """Remove PATH's parents up to MADE (the outermost dir the command made) while they are empty."""
    if made is None or (path != made and made not in path.parents):
        return
    for folder in [path, *path.parents]:
        if folder.is_dir():
            if any(folder.iterdir()):
                break
            folder.rmdir()
        if folder == made:
            break


def seed_of(cfg: DictConfig) -> Any:
    """The config's seed, or None when it cannot be read (a start refused for its config)."""
    return OmegaConf.select(cfg, "seed", default=None, throw_on_resolution_failure=False)


def abandon_start(run: RunDir | None, job: JobContext, exc: BaseException, rank0: bool, seed: Any = None) -> None:
    """A start stopped before it began: a single run leaves no run dir behind, a sweep's job shows as failed (a dir
    Hydra made but the start did not claim yet is claimed now, if it is still empty). Needs no torch."""
    if run is None:
        path = job.run_dir or DEFAULT_RUN_DIR
        if not rank0 or not path.is_dir() or any(path.iterdir()):
            return
        try:
            run = RunDir.claim(path)
        except Exception:  # in use by a live run: not ours to touch
            return
    failed = {"status": "failed", "error": one_line(exc), "seed": seed} if job.multirun else None
    run.abandon(job.hydra_files, failed)
    if failed is not None:
        to_log_files(f"error: {failed['error']}")
    elif not run.path.exists():  # nor the parents the command made for it (outputs/runs/)
        remove_empty_parents(run.path, job.made)


@contextmanager
def abandoned_if_refused(job: JobContext, rank0: bool, seed: Any = None) -> Iterator[SimpleNamespace]:
    """An exception in the block abandons the start (`abandon_start`); set `.run` once the dir is claimed."""
    claimed = SimpleNamespace(run=None)
    try:
        yield claimed
    except BaseException as exc:
        abandon_start(claimed.run, job, exc, rank0, seed)
        raise
