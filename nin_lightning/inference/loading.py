"""A run's checkpoint with its dataset config and the device, precision and speed switches its test ran with."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from nin_lightning import speed
from nin_lightning.config import DIGIT_DATASETS, DatasetConfig, from_plain
from nin_lightning.config.schema import PRECISIONS
from nin_lightning.data import build_datamodule
from nin_lightning.data.base import NiNDataModule, Split
from nin_lightning.errors import UserError
from nin_lightning.inference.run_files import DATASET_OVERRIDES, IDENTITY_KEYS, OVERRIDE_HINT, checkpoint_path
from nin_lightning.module import NiNClassifier
from nin_lightning.rundir import read_metrics
from nin_lightning.rundir.layout import HYDRA_DIR

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

    def split(self, name: str) -> Split:
        """The run's test or val split, checked to hold images of the shape the model was trained on."""
        datamodule = self.datamodule()
        data = datamodule.test_split if name == "test" else datamodule.val_split
        if data is None or len(data) == 0:
            raise UserError(f"{self.run_dir}'s run has no {name} images (dataset.val_size="
                            f"{self.dataset.val_size}); use --split test")
        size = self.dataset.image_size
        expected = (self.model.hparams["in_channels"], size, size)
        if tuple(data.images.shape[1:]) != expected:  # a dataset.root holding other files
            raise UserError(f"the {self.dataset.name} {name} split in {self.dataset.root} holds images of shape "
                            f"{tuple(data.images.shape[1:])}, but {self.checkpoint} was trained on {self.dataset.name} "
                            f"images of {expected}: dataset.root={self.dataset.root} holds another dataset; pass the "
                            "dataset.root the run trained on")
        return data

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
    """RUN_DIR's best or last model with its dataset's normalisation, set up as the run's own test was; OVERRIDES:
    DATASET_OVERRIDES' keys; TTA and COMPILE: on/off (None: the run's, compile where this device can)."""
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
    if str(requested) not in PRECISIONS:  # a metrics.json or config edited by hand: this device's own choice
        requested = "auto"
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
