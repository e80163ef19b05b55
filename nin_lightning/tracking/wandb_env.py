"""W&B's own rules as the installed SDK applies them: its server, a login, where a run lands (docs/tracking.md)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from nin_lightning.config import LoggerConfig
from nin_lightning.config.schema import wandb_env_tags
from nin_lightning.status import say

DEFAULT_PROJECT = "nin-lightning"
SDK_ALIASES = {"dryrun": "offline", "run": "online"}  # WANDB_MODE values the SDK also takes
DEFAULT_JOB_TYPE = "train"


def wandb_host() -> str:
    """The W&B server the SDK would talk to (WANDB_BASE_URL, else `wandb login --host`'s, else its default)."""
    import wandb

    return str(wandb.setup(wandb.Settings(silent=True)).settings.base_url)


def has_login() -> bool:
    """Whether the SDK has credentials for its server (no network, no prompt; docs/tracking.md)."""
    import wandb

    wandb.setup(wandb.Settings(silent=True))  # silent: login would otherwise ask the server who we are
    return bool(wandb.login(verify=False, prompt=False))


def reachable(url: str, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to URL's host and port opens within TIMEOUT_S."""
    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout_s):
            return True
    except (OSError, UnicodeError):
        return False


def wandb_mode(cfg: LoggerConfig) -> str:
    """online, offline or disabled (`auto`: WANDB_MODE, else online with a login); offline if unreachable."""
    mode = cfg.mode
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if has_login() else "offline")
    mode = SDK_ALIASES.get(mode, mode)
    if mode == "online" and not reachable(host := wandb_host()):
        say(f"W&B server {host} unreachable: logging offline instead (sync later with `wandb sync`)")
        mode = "offline"
    return mode


@dataclass(frozen=True)
class RunPlace:
    """Where a run lands in W&B and what it is called."""

    project: str
    entity: str | None
    job_type: str
    name: str | None  # None: the SDK's rule (WANDB_NAME, else a generated name)
    tags: tuple[str, ...]


def run_place(cfg: LoggerConfig, tags: list[str], name: str | None, agent: Mapping[str, Any] | None = None,
              job_type: str | None = None) -> RunPlace:
    """The config's values, else W&B's variables, else this project's defaults; AGENT's project and entity win (a
    W&B agent's run, or the run this one continues). WANDB_NAME wins over NAME. JOB_TYPE: a command's own."""
    agent = agent or {}
    env = os.environ.get
    return RunPlace(
        project=agent.get("project") or cfg.project or env("WANDB_PROJECT") or DEFAULT_PROJECT,
        entity=agent.get("entity") or cfg.entity or env("WANDB_ENTITY") or None,
        job_type=job_type or cfg.job_type or env("WANDB_JOB_TYPE") or DEFAULT_JOB_TYPE,
        name=env("WANDB_NAME") or name,
        tags=tuple(dict.fromkeys([*tags, *wandb_env_tags()])),
    )
