"""Checkpoint files: written atomically (Lightning's CheckpointIO plugin), read with weights_only=True."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from nin_lightning.atomic_files import atomic_write
from nin_lightning.errors import SPACE_ERRNOS, UserError, space_fix


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temp file in the same dir, fsync, then rename: never a half-written .ckpt.

    `preloaded`: the start's checkpoint, read while planning (Lightning gets it without reading it again).
    `durable(path)`: whether the write is fsynced (not one the run rereads: it is made durable at the end)."""

    def __init__(self, preloaded: tuple[Path, dict[str, Any]] | None = None,
                 durable: Callable[[Path], bool] = lambda path: True) -> None:
        super().__init__()
        self.preloaded = preloaded
        self.durable = durable

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        target = Path(path)
        try:
            atomic_write(target, partial(torch.save, checkpoint), durable=self.durable(target))
        except OSError as exc:
            if exc.errno in SPACE_ERRNOS:
                kept = "the previous checkpoint is intact" if target.exists() else "no checkpoint was damaged"
                raise UserError(
                    f"{SPACE_ERRNOS[exc.errno]} while writing {target}; {kept} ({exc.strerror}). "
                    f"{space_fix(exc.errno, target).capitalize()} and rerun with resume=auto"
                ) from exc
            raise

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        if self.preloaded is not None and Path(path).resolve() == self.preloaded[0].resolve():
            checkpoint, self.preloaded = self.preloaded[1], None
            return checkpoint
        return load_checkpoint_file(Path(path))


def load_checkpoint_file(path: Path, fix: str | None = None) -> dict[str, Any]:
    """torch.load with weights_only=True (a checkpoint from elsewhere cannot run code); a one-line UserError
    ending in FIX for a truncated or foreign file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # the unpickler fails on garbage in many ways (EOFError, IndexError, ...)
        foreign = isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower().replace("_", " ")
        if foreign:
            raise UserError(f"checkpoint {path} holds Python objects besides tensors (not one of this project's); "
                            f"refusing to unpickle it: {fix or 'point ckpt_path at a checkpoint nin-lightning wrote'}"
                            ) from exc
        raise UserError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}); "
                        f"{fix or 'start fresh in a new run dir or point ckpt_path at another checkpoint'}") from exc
