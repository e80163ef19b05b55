"""The one way this project writes a file that others read: whole or not at all, even across a crash."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from nin_lightning.errors import SPACE_ERRNOS

# torch.save's own words for a write that was cut short (it raises RuntimeError, the OSError only as context)
_SHORT_WRITE = ("unexpected pos", "PytorchStreamWriter failed")


def out_of_space(exc: BaseException, path: Path) -> OSError | None:
    """EXC as an OSError naming PATH when it says writing PATH ran out of room (disk, quota, file size), else None."""
    link: BaseException | None = exc
    seen: set[int] = set()
    while link is not None and id(link) not in seen:
        if isinstance(link, OSError) and link.errno in SPACE_ERRNOS:
            return OSError(link.errno, link.strerror or os.strerror(link.errno), str(path))
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    if any(words in str(exc) for words in _SHORT_WRITE):
        return OSError(errno.ENOSPC, "the write was cut short: no space left, a disk quota or a file-size limit",
                       str(path))
    return None


def fsync_dir(path: Path) -> None:
    """Make a rename inside PATH survive a crash of the machine (or, for a file, its content)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_durable(path: Path) -> None:
    """fsync PATH and its dir: what `atomic_write(durable=False)` left to be done later."""
    fsync_dir(path)
    fsync_dir(path.parent)


def atomic_write(path: Path, content: bytes | str | Callable[[IO[bytes]], None], mode: int = 0o644,
                 durable: bool = True) -> Path:
    """Write CONTENT (bytes, text, or a function that writes to a binary file) to PATH: readers see the old file
    or the new one, never a part. MODE 0644: colleagues on a shared cluster read runs too (mkstemp makes 0600).
    `durable=False` skips the fsyncs (a file reread from the page cache, made durable later: `make_durable`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(content):
                content(fh)
            else:
                fh.write(content.encode() if isinstance(content, str) else content)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        full = out_of_space(exc, path) if isinstance(exc, Exception) else None
        if full is not None:
            raise full from exc
        raise
    if durable:
        fsync_dir(path.parent)
    return path
