"""The error a user can fix, shown as one line by cli/errors.py; a leaf module: it imports nothing of the package."""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable
from pathlib import Path

# A write that ran out of room, by errno: its name in one-line errors (atomic_files.py names the file)
SPACE_ERRNOS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large"}
NEXT_STEP = "[nin] "  # the notes (PEP 678) that the command line prints after an exception's `error:` line


class UserError(Exception):
    """A mistake in the user's input or environment: shown as one line, without a traceback."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' when a close match exists, else ''."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def space_fix(code: int | None, path: str | Path) -> str:
    """What to do when writing PATH failed with CODE (one of SPACE_ERRNOS)."""
    if code == errno.EFBIG:
        return "raise the file-size limit (ulimit -f) or write elsewhere"
    return f"free space in {Path(path).parent}" + (" (your disk quota)" if code == errno.EDQUOT else "")


def user_error(exc: BaseException) -> UserError | None:
    """The UserError that EXC is, or was raised from or while handling; None for any other exception."""
    return next((link for link in (exc, exc.__cause__, exc.__context__) if isinstance(link, UserError)), None)


def one_line(exc: BaseException) -> str:
    """Any exception as a single line that names the culprit (the CLI adds Hydra's and OmegaConf's, cli/errors.py)."""
    if (mistake := user_error(exc)) is not None:
        return " ".join(str(mistake).split())
    if isinstance(exc, OSError) and exc.filename:
        if exc.errno in SPACE_ERRNOS:
            return (f"{SPACE_ERRNOS[exc.errno]} while writing {exc.filename} ({exc.strerror}); "
                    f"{space_fix(exc.errno, exc.filename)}, then run the command again (resume=auto continues a run)")
        if exc.errno == errno.ENAMETOOLONG:
            return (f"a name in {exc.filename} is too long for the filesystem ({exc.strerror}); shorten the path "
                    "(hydra.run.dir, hydra.sweep.dir, or fewer keys in a sweep job's dir name)")
        return (f"cannot write or read {exc.filename}: {exc.strerror}; check the path and its permissions "
                "(hydra.run.dir, NIN_OUTPUT_DIR, dataset.root)")
    summary = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return f"{type(exc).__name__}: {summary or 'no message'} (set HYDRA_FULL_ERROR=1 for the traceback)"


def add_next_step(exc: BaseException, line: str) -> None:
    """What to do now, after EXC's error: the command line prints it after the `error:` line."""
    exc.add_note(f"{NEXT_STEP}{line}")


def next_steps(exc: BaseException) -> list[str]:
    """The lines `add_next_step` attached to EXC or to an exception it was raised from."""
    notes = [note for link in (exc, exc.__cause__, exc.__context__) for note in getattr(link, "__notes__", None) or ()]
    return list(dict.fromkeys(n for n in notes if isinstance(n, str) and n.startswith(NEXT_STEP)))
