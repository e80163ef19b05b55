"""Library noise a user of this project cannot act on, filtered once at the start of a job; and a quiet
console: the lines that matter on the console, every line in RUN_DIR/train.log."""

from __future__ import annotations

import logging
import warnings

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


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_LOG_PREFIXES)


def quiet_libraries() -> None:
    """Filter the warnings above; under Hydra's job logging, Lightning's lines are printed once, by it."""
    for pattern in _WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    root = logging.getLogger()
    if not root.handlers:  # not under Hydra: Lightning keeps its own console handlers
        return
    for handler in root.handlers:  # Hydra's console and RUN_DIR/<job>.log
        if not any(isinstance(f, _DropAdverts) for f in handler.filters):
            handler.addFilter(_DropAdverts())
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            if type(handler) is logging.StreamHandler:
                log.removeHandler(handler)
        log.propagate = True


class _QuietConsole(logging.Filter):
    """On the console only: Lightning's INFO lines (devices, AMP, "fit stopped"...) are dropped, and in a
    sweep also the per-epoch lines (status.show without `[nin]`). train.log keeps them all."""

    def __init__(self, sweep: bool) -> None:
        super().__init__()
        self.sweep = sweep

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        if record.name.startswith("lightning"):
            return False
        return not (self.sweep and record.name == "nin_lightning" and not str(record.msg).startswith("[nin]"))


def quiet_console(verbose: bool, sweep: bool) -> None:
    """Unless `verbose`: only our status lines (and epoch lines outside a sweep) and warnings on the console.

    Under Hydra's job logging the console is the root logger's stream handler(s); the file handlers
    (RUN_DIR/train.log) are left alone."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) or not isinstance(handler, logging.StreamHandler):
            continue
        for old in [f for f in handler.filters if isinstance(f, _QuietConsole)]:
            handler.removeFilter(old)  # a sweep's basic launcher runs the jobs in one process
        if not verbose:
            handler.addFilter(_QuietConsole(sweep))
