"""The one way this project writes a file that others read: whole or not at all, even across a crash."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


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
    """Write CONTENT (bytes, text, or a function that writes to a binary file) to PATH atomically.

    A temp file in PATH's dir, flushed and fsynced, renamed over PATH, the dir fsynced: readers see the
    old file or the new one, never a part. The temp file is removed on any failure (a full disk, Ctrl-C).
    Files are MODE (0644: colleagues on a shared cluster read runs too; mkstemp would make them 0600).
    `durable=False` skips both fsyncs (a file this process rereads from the page cache, made durable later
    with `make_durable`): readers still see whole files; a crash of the machine may lose the latest one.
    """
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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path
