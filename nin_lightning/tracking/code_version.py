"""The version of the code a run ran: the package version, and the git commit and dirty flag of a checkout."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) holding nin_lightning/
GIT_TIMEOUT_S = 10.0  # a git on a slow network filesystem; no answer then means "not known"


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):  # no git installed, or it hangs
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(root: Path) -> dict[str, Any]:
    """{"commit": sha, "dirty": bool} when ROOT is the top of a git checkout, else {}.

    Only the top: an installed package under a venv that sits inside some other checkout is not that
    checkout's code. Dirty: a tracked file differs from the commit (untracked files, such as outputs/,
    do not count)."""
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve():
        return {}
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    if commit is None or status is None:
        return {}
    return {"commit": commit, "dirty": bool(status)}


@functools.cache
def code_version(root: Path = PACKAGE_ROOT) -> dict[str, Any]:
    """{"version": "0.1.0", "commit": sha, "dirty": False}: commit and dirty only from a git checkout.

    Read once per process (a sweep's jobs in one process ran the same code)."""
    try:
        version = metadata.version("nin-lightning")
    except metadata.PackageNotFoundError:  # run from a checkout that was never pip-installed
        version = None
    return {"version": version, **git_state(root)}
