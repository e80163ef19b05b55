"""Exact resume: RNG states in the checkpoint, the run's config checked on resume, finished runs left alone.

A checkpoint from `RUN_DIR/checkpoints/last.ckpt` holds, besides Lightning's weights/optimizer/loop
state:
- `callbacks["RNGState"]`: torch (CPU and every CUDA device), numpy and python RNG states, restored on load;
- `nin_config`: the resolved `model` and `dataset` config, the optimizer and scheduler names and
  `trainer.max_epochs` of the run that saved it (written by `NiNClassifier.on_save_checkpoint`),
  compared before resuming.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from nin_lightning.checkpoints import last_checkpoint, read_metrics, resolve_start
from nin_lightning.console import say
from nin_lightning.errors import UserError
from nin_lightning.guards import load_checkpoint_file
from nin_lightning.paths import METRICS_FILE

CONFIG_KEY = "nin_config"
# These may differ between the original run and its resume: where the data lives, how it is loaded,
# evaluation-only and speed-only knobs. Everything else in `model` and `dataset` must match.
MAY_CHANGE = frozenset({"dataset.root", "dataset.download", "dataset.num_workers", "dataset.eval_batch_size",
                        "dataset.tta", "model.compile", "model.channels_last"})


class RNGState(Callback):
    """Saves the RNG states with every checkpoint and restores them when training resumes from one.

    With them, an epoch after a resume draws the same shuffling order, dropout masks and augmentations
    as it would have in an uninterrupted run: the DataLoader's RandomSampler seeds itself from the
    global torch RNG when the epoch's iterator starts, and the on-device augmentation uses it as well.
    """

    # Tensors and plain Python types only, so that checkpoints still load with torch.load(weights_only=True).
    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": (str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        name, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = state_dict["python"]
        random.setstate((version, tuple(internal), gauss_next))
        if "cuda" in state_dict and torch.cuda.is_available():
            states = state_dict["cuda"][: torch.cuda.device_count()]
            torch.cuda.set_rng_state_all(states)


def snapshot(plain: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint remembers of its run: resolved `model` and `dataset`, the optimizer and scheduler
    names (their states do not carry over to another kind) and `trainer.max_epochs`."""
    return {"model": plain.get("model", {}), "dataset": plain.get("dataset", {}),
            "optimizer": plain.get("optimizer", {}).get("name"), "scheduler": plain.get("scheduler", {}).get("name"),
            "max_epochs": plain.get("trainer", {}).get("max_epochs")}


def _flat(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out |= _flat(value, f"{prefix}.{key}")
        return out
    return {prefix: node}


def changed_keys(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key (old -> new)` for every model/dataset key that differs, less those in MAY_CHANGE.

    Keys that only one side has (the code gained or lost a config key in between) are not compared.
    """
    old = _flat(saved.get("model", {}), "model") | _flat(saved.get("dataset", {}), "dataset")
    new = _flat(now.get("model", {}), "model") | _flat(now.get("dataset", {}), "dataset")
    for group in ("optimizer", "scheduler"):  # by name: SGD's state does not load into AdamW, nor cosine's into plateau
        if saved.get(group) is not None and now.get(group) is not None:
            old[group], new[group] = saved[group], now[group]
    keys = sorted(k for k in old.keys() & new.keys() if k not in MAY_CHANGE and old[k] != new[k])
    return [f"{k} ({old[k]!r} -> {new[k]!r})" for k in keys]


def _original_overrides(run_dir: Path) -> str:
    """'; it was started with: a=1 b=2' from RUN_DIR/.hydra/overrides.yaml, or ''."""
    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        import yaml

        overrides = [o for o in yaml.safe_load(path.read_text()) or [] if not str(o).startswith("resume=")]
    except (OSError, ValueError, ImportError, AttributeError, TypeError):
        return ""
    return f" (it was started with: {' '.join(map(str, overrides)) or 'no overrides'})"


def check_resume(ckpt: Path, plain: dict[str, Any], run_dir: Path, same_run: bool) -> dict[str, Any] | None:
    """Before resuming from `ckpt`: raise a one-line UserError if the model or dataset changed.

    Returns the run's metrics.json when `same_run` (resume=auto in the run dir) and that run already
    finished with the same or a higher trainer.max_epochs: then there is nothing left to do.
    """
    checkpoint = load_checkpoint_file(ckpt)
    saved = checkpoint.get(CONFIG_KEY)
    now = snapshot(plain)
    if saved is None:
        say(f"{ckpt} does not record its model/dataset config; resuming without checking it")
        saved_max = None
    else:
        diff = changed_keys(saved, now)
        if diff:
            started = _original_overrides(run_dir) if same_run else ""
            raise UserError(f"cannot resume from {ckpt}: the config changed: {', '.join(diff)}; resume with the "
                            f"original overrides{started}, or start a new run (another hydra.run.dir)")
        saved_max = saved.get("max_epochs")
    if not same_run:
        return None
    metrics = read_metrics(run_dir)
    done_epochs = int(checkpoint.get("epoch", -1)) + 1
    target = saved_max if saved_max is not None else done_epochs
    max_epochs = now["max_epochs"]
    if metrics.get("status") == "completed" and max_epochs is not None and 0 <= max_epochs <= target:
        say(f"{run_dir} already finished ({metrics.get('epochs')} epochs, status completed; "
            f"test/acc={metrics.get('test/acc')}): nothing to do. Raise trainer.max_epochs above {target} to "
            "train it further")
        return metrics
    return None


def requeued_resume(resume: str, quiet: bool = False, run_dir: Path | None = None) -> str:
    """A job that Slurm requeued (SLURM_RESTART_COUNT > 0) always continues from its run dir's last.ckpt."""
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    if restarts > 0 and not quiet:
        job = os.environ.get("SLURM_JOB_ID")
        if run_dir is not None and not last_checkpoint(run_dir).is_file():
            say(f"Slurm restart #{restarts} of job {job}, but {run_dir} holds no checkpoints/last.ckpt: starting "
                "fresh. Pin the run dir in the job script (hydra.run.dir=outputs/runs/$SLURM_JOB_ID) so that a "
                "requeued job finds its checkpoint")
        elif resume != "auto":
            say(f"Slurm restart #{restarts} of job {job}: resume=auto")
    return "auto" if restarts > 0 else resume



def plan_start(resume: str, ckpt_path: str | None, plain: dict[str, Any], run_dir: Path,
               quiet: bool = False) -> tuple[Path | None, dict[str, Any] | None]:
    """(checkpoint to start from or None, the metrics of a finished run or None), refusing bad resumes.

    One line (UserError) for: a new run into an existing run dir, a missing `ckpt_path`, a run dir with
    no last.ckpt to continue, a changed model/dataset/optimizer/scheduler. A finished run's metrics mean
    there is nothing left to do. Used by the Hydra callback (before Hydra rewrites the run dir's .hydra/
    files) and by `run.train` (for runs started without Hydra).
    """
    start = resolve_start(run_dir, requeued_resume(resume, quiet=quiet, run_dir=run_dir), ckpt_path)
    if start is None:
        return None, None
    return start, check_resume(start, plain, run_dir, same_run=ckpt_path is None)


def keep_previous_metrics(run_dir: Path) -> None:
    """Before a finished run is extended: its metrics.json is kept as metrics.previous.json."""
    path = run_dir / METRICS_FILE
    if read_metrics(run_dir).get("status") == "completed":
        path.with_name("metrics.previous.json").write_bytes(path.read_bytes())
