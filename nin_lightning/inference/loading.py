"""Load what a run trained: its best or last checkpoint as a `NiNClassifier`, with the run's dataset config
(its splits and normalisation) and the device, precision and speed switches its own test ran with, so
that evaluating it again gives the same numbers.

    run = load_run(Path("outputs/runs/2026-12-01_10-00-00-000000"))   # best.ckpt; ckpt="last" for last.ckpt
    x = run.normalise(uint8_images)                                    # (N, C, H, W) -> the model's input
    logits = run.model.evaluate(x)

Nothing here writes into the run dir: loading reads the checkpoint, metrics.json and .hydra/ only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from nin_lightning import speed
from nin_lightning.config import DIGIT_DATASETS, DatasetConfig, from_plain
from nin_lightning.data import build_datamodule
from nin_lightning.data.base import NiNDataModule
from nin_lightning.errors import UserError, did_you_mean
from nin_lightning.module import NiNClassifier
from nin_lightning.rundir import best_checkpoint, is_locked, last_checkpoint, read_metrics
from nin_lightning.rundir.layout import CHECKPOINT_DIR, HYDRA_DIR

CHECKPOINTS: dict[str, Callable[[Path], Path]] = {"best": best_checkpoint, "last": last_checkpoint}
# The dataset keys a loaded run may change, and their types: where its files are and how they are read.
# Every other key decides which images a split holds or how they look, and stays the run's.
DATASET_OVERRIDES: dict[str, type] = {"root": str, "download": bool, "eval_batch_size": int, "num_workers": int}
OVERRIDE_HINT = "dataset.root=DIR, dataset.eval_batch_size=N, dataset.num_workers=N or dataset.download=true"
# A checkpoint and the run dir it sits in must agree on these (a checkpoint copied into another run's dir).
IDENTITY_KEYS = ("name", "num_classes", "in_channels", "image_size")
# Lightning's warnings about a Trainer built for one pass over data held in memory, not for training.
_PASS_WARNINGS = (r".*but have no logger configured.*", r".*does not have many workers.*")


@dataclass
class LoadedRun:
    """A run dir's model, ready for inference (eval mode), and what its own test ran with."""

    run_dir: Path
    checkpoint: Path
    model: NiNClassifier
    dataset: DatasetConfig  # the run's dataset config, with the overrides
    device: str  # where the run tested (metrics.json speed/device), or this machine's device
    precision: str  # the run's test precision (metrics.json speed/precision), as this device runs it
    deterministic: bool  # the run's trainer.deterministic
    metrics: dict[str, Any]  # the run's metrics.json ({} without one)
    notes: tuple[str, ...] = ()  # one line each, for the user: where this pass differs from the run's test
    _datamodule: NiNDataModule | None = field(default=None, repr=False)

    @property
    def class_names(self) -> list[str] | None:
        """The classes' names in label order, where the dataset has them (CIFAR); None for digits."""
        names = self.model.hparams.get("class_names")
        return list(names) if names else None

    def label(self, index: int) -> str:
        """Class INDEX as the user reads it: its name, or the label itself (digits)."""
        names = self.class_names
        return names[index] if names else str(index)

    def datamodule(self, setup: bool = True) -> NiNDataModule:
        """The run's DataModule; `setup` reads its files (the splits, and the GCN+ZCA fit if the run used it)."""
        if self._datamodule is None:
            self._datamodule = build_datamodule(self.dataset)
        if setup:
            self._datamodule.setup("fit")
        return self._datamodule

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> the model's float input, exactly as the run evaluated (mean/std, or GCN+ZCA)."""
        datamodule = self.datamodule(setup=self.dataset.preprocess != "none")
        return datamodule.transform_batch(images, training=False)

    def trainer(self, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
        """A Trainer for one pass (test, validate or predict) on the run's device and precision; it writes nothing."""
        for pattern in _PASS_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        return L.Trainer(accelerator=self.device, devices=1, precision=self.precision,  # type: ignore[arg-type]
                         deterministic=self.deterministic, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))


def checkpoint_path(run_dir: Path, ckpt: str) -> Path:
    """RUN_DIR/checkpoints/{best,last}.ckpt; a one-line UserError that says why there is none and what to do."""
    if ckpt not in CHECKPOINTS:
        raise UserError(f"--ckpt {ckpt}: not a valid choice{did_you_mean(ckpt, CHECKPOINTS)}; choose best or last")
    if not run_dir.exists():
        raise UserError(f"{run_dir}: no such directory; pass a run dir (the hydra.run.dir of a training run, "
                        "e.g. outputs/runs/<time>)")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file; pass the run dir that holds {CHECKPOINT_DIR}/ (its parent's parent "
                        "for a checkpoint)")
    path = CHECKPOINTS[ckpt](run_dir)
    if path.is_file():
        return path
    other = next(name for name in CHECKPOINTS if name != ckpt)
    if CHECKPOINTS[other](run_dir).is_file():
        fix = f"pass --ckpt {other} (the run has {CHECKPOINT_DIR}/{other}.ckpt)"
    elif is_locked(run_dir) or read_metrics(run_dir).get("status") == "running":
        fix = "its run is still in its first epoch: wait until an epoch has ended"
    elif jobs := sorted(p.name for p in run_dir.iterdir() if (p / CHECKPOINT_DIR).is_dir()):
        fix = f"it is a sweep dir: pass one of its jobs' dirs, e.g. {run_dir / jobs[0]}"
    else:
        fix = "its run stopped before its first epoch ended, or it is not a run dir: pass the dir of a run that trained"
    raise UserError(f"{run_dir} has no {CHECKPOINT_DIR}/{ckpt}.ckpt; {fix}")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`dataset.root=DIR`-style arguments -> {"root": "DIR"}; one line for a key a loaded run cannot change."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        group, _, name = key.partition(".")
        if sep and group == "model":
            raise UserError(f"{item}: the model is the one its checkpoint holds, so model keys cannot change; "
                            "drop it")
        if not sep or group != "dataset" or name not in DatasetConfig.__dataclass_fields__:
            raise UserError(f"{item}: not an override these commands take; pass {OVERRIDE_HINT}")
        kind = DATASET_OVERRIDES.get(name)
        if kind is None:
            fix = " (dataset.eval_batch_size is evaluation's)" if name == "batch_size" else ""
            raise UserError(f"{item}: dataset.{name} decides which images the run's splits hold or how they look, "
                            f"so it stays the run's{fix}; drop it, or pass {OVERRIDE_HINT}")
        values[name] = _convert(item, text, kind)
    return values


def _convert(item: str, text: str, kind: type) -> Any:
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise UserError(f"{item}: give true or false")
        return text.lower() == "true"
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise UserError(f"{item}: give a whole number, e.g. {item.partition('=')[0]}=256") from None
    return text


def _read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file of the run dir as plain data ({} when it is missing or unreadable): no Hydra needed."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _data_root(root: str, run_dir: Path) -> str:
    """A relative dataset.root is relative to where the run was started (Hydra's runtime.cwd), when it is there."""
    path = Path(root).expanduser()
    if path.is_absolute() or path.exists():
        return root
    cwd = _read_yaml(run_dir / HYDRA_DIR / "hydra.yaml").get("hydra", {}).get("runtime", {}).get("cwd")
    if cwd and (Path(cwd) / path).exists():
        return str(Path(cwd) / path)
    return root


def _dataset(model: NiNClassifier, run_config: dict[str, Any], ckpt: Path, run_dir: Path,
             overrides: dict[str, Any]) -> DatasetConfig:
    """The dataset config the checkpoint records, checked against its run dir's, with OVERRIDES applied."""
    recorded = dict(model.hparams.get("dataset") or {})
    in_dir = run_config.get("dataset") or {}
    for key in IDENTITY_KEYS:
        if key in in_dir and key in recorded and in_dir[key] != recorded[key]:
            raise UserError(f"{ckpt} was trained with dataset.{key}={recorded[key]!r}, but {run_dir / HYDRA_DIR}/"
                            f"config.yaml says {in_dir[key]!r}: the checkpoint belongs to another run; put it back in "
                            "its own run dir and pass that one")
    recorded["root"] = _data_root(str(recorded.get("root", "data")), run_dir)
    return from_plain(DatasetConfig, recorded | overrides)


def _device(recorded: str | None) -> tuple[str, str | None]:
    """The device the run tested on when this machine has it (a CPU always), else this machine's."""
    here = speed.target_device("auto")
    if recorded in (None, here, "cpu"):
        return recorded or here, None
    return here, f"the run tested on {recorded}, which this machine lacks: running on {here}"


def load_run(run_dir: Path, ckpt: str = "best", overrides: dict[str, Any] | None = None, tta: bool | None = None,
             compile: bool | None = None) -> LoadedRun:
    """RUN_DIR's best or last model with its dataset's normalisation, set up as the run's own test was.

    `overrides`: dataset keys that may change (DATASET_OVERRIDES); `tta`: flip TTA on/off (None: the run's);
    `compile`: torch.compile on/off (None: the run's, where this device can)."""
    run_dir = Path(run_dir)
    path = checkpoint_path(run_dir, ckpt)
    unknown = set(overrides or {}) - set(DATASET_OVERRIDES)
    if unknown:
        raise UserError(f"dataset.{sorted(unknown)[0]} cannot change for a trained run; pass only {OVERRIDE_HINT}")
    metrics = read_metrics(run_dir)
    run_config = _read_yaml(run_dir / HYDRA_DIR / "config.yaml")
    trainer_cfg = run_config.get("trainer") or {}
    device, moved = _device(metrics.get("speed/device"))
    requested = metrics.get("speed/precision") or trainer_cfg.get("precision") or "auto"
    precision, changed = speed.resolve_precision(str(requested), device)
    # The speed switches the run's test used (metrics.json): the checkpoint's are those of the start that saved
    # it, and a resumed run may have tested with another start's.
    switches = {k: metrics.get(f"speed/{k}") for k in ("tta", "channels_last", "compile")}
    kwargs = {k: v for k, v in switches.items() if isinstance(v, bool)}
    if compile is not None:
        kwargs["compile"] = compile
    notes = [n for n in (moved, changed) if n]
    if kwargs.get("compile"):
        kwargs["compile"], refused = speed.resolve_compile(True, device)
        notes += [refused] if refused else []
    model = NiNClassifier.load_from_checkpoint(path, map_location="cpu", **kwargs).eval()
    dataset = _dataset(model, run_config, path, run_dir, overrides or {})
    if tta is not None:
        if tta and dataset.name in DIGIT_DATASETS:
            raise UserError(f"--tta on: {dataset.name} holds digits, which a mirror image turns into other digits or "
                            "none; use --tta off")
        model.tta = tta
    if notes:
        notes.append("numbers may differ from the run's own test in the last digits")
    return LoadedRun(run_dir, path, model, dataset, device, precision, bool(trainer_cfg.get("deterministic", False)),
                     metrics, tuple(notes))
