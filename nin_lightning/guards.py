"""Guards for unattended runs: non-finite loss, atomic checkpoint writes, free disk space."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from nin_lightning.console import say
from nin_lightning.errors import UserError


class FiniteLossGuard(Callback):
    """Stop before the optimizer step when the loss is NaN/inf, so no bad weights reach a checkpoint.

    Under DDP the ranks decide together (any rank's bad loss stops all), so none waits forever in the
    gradient all-reduce of a rank that stopped."""

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss).all())
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise UserError(
                f"non-finite training loss ({loss.item()} on rank {trainer.global_rank}) at epoch "
                f"{trainer.current_epoch}, "
                f"step {trainer.global_step}; the last good checkpoint is kept. Lower optimizer.lr or "
                "set trainer.gradient_clip_val"
            )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temp file in the same dir, fsync, then rename: never a half-written .ckpt."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600: colleagues on a shared cluster read checkpoints too
            os.replace(tmp, target)
            _fsync_dir(target.parent)  # the rename itself survives a crash
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise UserError(
                    f"disk full while writing {target}; the previous checkpoint is intact. Free space in "
                    f"{target.parent} and rerun with resume=auto"
                ) from exc
            raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint_file(Path(path))


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """torch.load with weights_only=True (tensors and plain types: this project's checkpoints, RNG states
    included), so a checkpoint from elsewhere cannot run code; one line for a truncated or foreign file."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # the unpickler fails on garbage in many ways (EOFError, IndexError, ...)
        foreign = isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower().replace("_", " ")
        if foreign:
            raise UserError(f"checkpoint {path} holds Python objects besides tensors (not one of this project's); "
                            "refusing to unpickle it: point ckpt_path at a checkpoint nin-lightning wrote") from exc
        raise UserError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}); start fresh in a new "
                        "run dir or point ckpt_path at another checkpoint") from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def warn_if_low_disk(run_dir: Path, min_free_gb: float) -> float:
    """Warn (one line) when the run dir's filesystem has less than `min_free_gb` free; return free GB."""
    free_gb = shutil.disk_usage(run_dir).free / 1e9
    if free_gb < min_free_gb:
        say(f"warning: only {free_gb:.2f} GB free in {run_dir} (< callbacks.min_free_disk_gb={min_free_gb}); "
            "checkpoints may fail to save")
    return free_gb
