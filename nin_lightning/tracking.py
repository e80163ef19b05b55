"""Experiment tracking: one W&B run per job (offline without a login), and metrics.json."""

from __future__ import annotations

import json
import math
import netrc
import os
import secrets
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from nin_lightning.config import LoggerConfig
from nin_lightning.console import say
from nin_lightning.paths import METRICS_FILE, WANDB_RUN_FILE


def _has_wandb_login() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _wandb_reachable(timeout_s: float = 3.0) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "api.wandb.ai", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wandb_mode(cfg: LoggerConfig) -> str:
    """online, offline or disabled. `auto` means online only with a login; online falls back when unreachable."""
    mode = cfg.mode
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if _has_wandb_login() else "offline")
    if mode == "online" and not _wandb_reachable():
        say("W&B server unreachable: logging offline instead (sync later with `wandb sync`)")
        mode = "offline"
    return mode


def _flush_often(settings: Any) -> dict[str, Any]:
    """Write the run's .wandb file every 2 s (W&B: 15 s): Slurm's SIGTERM on preemption also stops W&B's
    service process, which then loses what it had not written yet."""
    field = "x_transaction_log_flush_interval"
    return {field: 2.0} if field in getattr(settings, "model_fields", {}) else {}


class Tracker:
    """Owns the W&B run's lifecycle: init before fit, finish (with exit code) after the job."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict[str, Any], group: str | None,
                 name: str | None, tags: list[str]) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.run: Any = None
        self.loggers: list[Logger] = []
        if cfg.name == "csv":
            self.loggers = [CSVLogger(save_dir=str(run_dir), name="csv")]
        elif cfg.name == "wandb" and rank_zero_only.rank != 0:
            # Other DDP ranks get a logger whose experiment is a no-op: no empty W&B runs.
            self.loggers = [WandbLogger(project=cfg.project, save_dir=str(run_dir))]
        elif cfg.name == "wandb":
            self._start_wandb(config, group, name, tags)

    def _start_wandb(self, config: dict[str, Any], group: str | None, name: str | None, tags: list[str]) -> None:
        import wandb

        mode = wandb_mode(self.cfg)
        run_file = self.run_dir / WANDB_RUN_FILE
        # A resumed job continues its W&B run: same id, and the group and name it started with (the resume
        # command's overrides do not make it another job).
        saved = json.loads(run_file.read_text()) if run_file.exists() else {}
        run_id = saved.get("id") or secrets.token_hex(4)
        group, name = saved.get("group", self.cfg.group or group), saved.get("name", name)
        self.run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            group=group,
            job_type=self.cfg.job_type,
            name=name,
            tags=list(tags),
            config=config,
            dir=str(self.run_dir),
            id=run_id,
            resume="allow",
            mode=mode,
            settings=wandb.Settings(
                init_timeout=self.cfg.init_timeout_s, silent=True, console="off", reinit="finish_previous",
                **_flush_often(wandb.Settings),
            ),
        )
        run_file.write_text(json.dumps({"id": run_id, "group": group, "name": name}) + "\n")
        self.loggers = [WandbLogger(experiment=self.run)]
        if mode == "offline":
            say(f"W&B offline run in {self.run.dir.rsplit('/files', 1)[0]}; upload it later with "
                f"`wandb sync {self.run_dir / 'wandb'}/offline-run-*`")
        elif mode == "online":
            say(f"W&B run: {self.run.url}")

    def finish(self, exit_code: int) -> None:
        """Close the W&B run, marked failed when exit_code != 0, so the next job starts a new one."""
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> Path:
    """Write flat metrics.json atomically (rank 0 only)."""
    path = run_dir / METRICS_FILE
    if rank_zero_only.rank != 0:
        return path
    flat = {k: _clean(v) for k, v in sorted(metrics.items())}
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".metrics-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(flat, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
