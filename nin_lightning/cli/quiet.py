"""Library noise a user cannot act on, filtered; a quiet console: what matters there, every line in train.log."""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any, TextIO

from nin_lightning.config import TrainerConfig
from nin_lightning.status import to_log_files

# Warnings about things this project handles itself.
_WARNINGS = (
    r"The `srun` command is available on your system but is not used",  # Slurm jobs use srun or submitit
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning 2.6 on torch 2.14, internal
    r"Precision .* is not supported by the model summary",  # the summary's size estimate only
    r"`\.test\(ckpt_path=\"best\"\)` is called with Trainer configured with multiple `ModelCheckpoint`",  # best.ckpt
    r"Checkpoint directory .* exists and is not empty",  # resume=auto continues in its run dir
    r"You called `self\.log\('test/.*but have no logger configured",  # logger=none: metrics.json has them
)
_LOG_PREFIXES = ("💡 Tip:",)  # Lightning's advertisement for its cloud logger


def _drop_adverts(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_LOG_PREFIXES)


def quiet_libraries() -> None:
    """Filter the warnings above; under Hydra's job logging, Lightning's lines are printed once, by it."""
    for pattern in _WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    root = logging.getLogger()
    if not root.handlers:  # not under Hydra: Lightning keeps its own console handlers
        return
    for handler in root.handlers:  # Hydra's console and RUN_DIR/<job>.log
        handler.addFilter(_drop_adverts)  # once: logging adds a filter it has already only once
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            if type(handler) is logging.StreamHandler:
                log.removeHandler(handler)
        log.propagate = True


class _QuietConsole(logging.Filter):
    """On the console only: Lightning's INFO lines are dropped, and in a sweep the epoch lines (without `[nin]`)."""

    def __init__(self, sweep: bool) -> None:
        super().__init__()
        self.sweep = sweep

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        if record.name.startswith("lightning"):
            return False
        return not (self.sweep and record.name == "nin_lightning" and not str(record.msg).startswith("[nin]"))


# Lightning's warnings name its own arguments, `Trainer(log_every_n_steps=10)`; this project's keys set them
_TRAINER_ARGUMENT = re.compile(r"Trainer\((\w+)=([^)]*)\)")
_LIGHTNING_PACKAGES = ("lightning", "lightning_fabric", "pytorch_lightning", "lightning_utilities")


def in_config_words(message: str) -> str:
    """Lightning's warning MESSAGE with `Trainer(x=v)` as the config key `trainer.x=v`, named again at its end."""
    keys = {f.name for f in fields(TrainerConfig)}
    named = [m.group(1) for m in _TRAINER_ARGUMENT.finditer(message) if m.group(1) in keys]
    words = _TRAINER_ARGUMENT.sub(lambda m: f"trainer.{m.group(1)}={m.group(2)}" if m.group(1) in keys
                                  else m.group(0), message)
    return words + "".join(f" (change it with trainer.{key}=N)" for key in dict.fromkeys(named))


def _from_lightning(category: type[Warning], filename: str) -> bool:
    """Whether a warning's category or the code that warned is in a Lightning package."""
    return (category.__module__.split(".")[0] in _LIGHTNING_PACKAGES
            or any(part in _LIGHTNING_PACKAGES for part in Path(filename).parts))


class _LightningWarningsToLog:
    """`warnings.showwarning` of a quiet console: Lightning's go to train.log only, in config words."""

    def __init__(self, shown_before: Any) -> None:
        self.shown_before = shown_before

    def __call__(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
        if file is None and _from_lightning(category, filename):
            to_log_files(f"{category.__name__}: {in_config_words(str(message))}", logging.WARNING)
            return
        self.shown_before(message, category, filename, lineno, file, line)


def quiet_console(verbose: bool, sweep: bool) -> None:
    """Unless `verbose`: only our status lines (and epoch lines outside a sweep) and warnings on the console (the
    root logger's stream handlers); Lightning's own warnings go to RUN_DIR/train.log only."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # before torchmetrics imports it: its fontManager line
    logging.raiseExceptions = False  # a line train.log cannot take (a full disk): no traceback; the error line says
    if isinstance(warnings.showwarning, _LightningWarningsToLog):  # a sweep's jobs may share this process
        warnings.showwarning = warnings.showwarning.shown_before
    if not verbose:
        warnings.showwarning = _LightningWarningsToLog(warnings.showwarning)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) or not isinstance(handler, logging.StreamHandler):
            continue
        for old in [f for f in handler.filters if isinstance(f, _QuietConsole)]:
            handler.removeFilter(old)  # a sweep's basic launcher runs the jobs in one process
        if not verbose:
            handler.addFilter(_QuietConsole(sweep))
