"""Is a real Slurm here? The one `need_slurm()` of the Slurm tests: skip without Slurm, but FAIL in CI.

.ci/run exports CI=1 after starting a single-node Slurm (.ci/slurm-setup.sh), so a Slurm test that would
be skipped there is a broken CI setup, not a pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

SLURM_UP = ("idle", "mix", "alloc", "comp")  # a node that runs jobs now or once its current ones end


def slurm_state() -> str | None:
    """The state of the first usable Slurm node, or None when there is no usable Slurm here."""
    if not shutil.which("sinfo"):
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    states = [s.strip().rstrip("*~#") for s in out.split()]
    return next((s for s in states if s in SLURM_UP), None)


def need_slurm() -> None:
    """Skip the calling test without a usable Slurm node; fail it instead when the env var CI is set."""
    if slurm_state() is not None:
        return
    reason = ("no usable Slurm here: `sinfo` is missing or shows no idle/mix/alloc node "
              "(start one as root with `bash .ci/slurm-setup.sh`)")
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI=1 is set, so this Slurm test must run, not be skipped")
    pytest.skip(reason)
