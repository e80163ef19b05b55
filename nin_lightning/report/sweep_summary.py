"""A Hydra callback (conf/train.yaml): at a sweep's end, its outcomes, the report command and how to continue it."""
from __future__ import annotations

import atexit
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nin_lightning.errors import UserError
from nin_lightning.report.jobs import FAILED, INCOMPLETE, read_sweep_dir
from nin_lightning.rundir.start import hydra_value


class SweepSummary(Callback):
    """At a sweep's end, its summary: registered at exit, as Hydra skips `on_multirun_end` when a job failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if str(config.hydra.launcher.get("_target_", "")).endswith(".DryLauncher"):
            return  # a dry run runs no job: an existing sweep dir's jobs are not its outcome
        sweep_dir = Path(str(config.hydra.sweep.dir))
        # the command that continues the sweep in its own dir (without hydra.sweep.dir a relaunch is a new sweep)
        kept = [str(o) for o in [*config.hydra.overrides.hydra, *config.hydra.overrides.task]
                if not str(o).startswith(("resume=", "hydra.sweep.dir=", "hydra.mode="))]
        again = shlex.join(["python", "train.py", "-m", *kept, "resume=auto",
                            f"hydra.sweep.dir={hydra_value(str(sweep_dir))}"])
        atexit.register(summarise_sweep, sweep_dir, again)


def summarise_sweep(sweep_dir: Path, again: str | None = None) -> None:
    try:
        jobs = read_sweep_dir(sweep_dir)
    except (UserError, OSError):  # no job dirs (every job refused before it started), or no such dir
        return
    outcomes = ", ".join(f"{n} {status}" for status, n in sorted(Counter(j.status for j in jobs).items()))
    # print, not the log: the last job's log file may still be attached to the root logger
    print(f"[nin] sweep: {len(jobs)} jobs ({outcomes}) in {sweep_dir}; table and plots: "
          f"python -m nin_lightning.report {shlex.quote(str(sweep_dir))}", flush=True)
    if again and {FAILED, INCOMPLETE} & {j.status for j in jobs}:  # what resume=auto continues
        print(f"[nin] to continue the sweep in its dir: {again}", flush=True)
