"""Classify image files with a trained run: each image normalised as the run's test images are, batched as
its test was (dataset.eval_batch_size), through the module's evaluation (TTA as the run), on the run's
device and precision (`Trainer.predict`). An image that is one of the test set's gets the class that
`evaluate` gives it."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from nin_lightning.atomic_files import atomic_write
from nin_lightning.errors import UserError
from nin_lightning.inference.images import FIX, BadImage, ImageFile, find_images, read_image
from nin_lightning.inference.loading import LoadedRun
from nin_lightning.inference.run_files import DEFAULT_TOP
from nin_lightning.rundir.layout import PREDICTIONS_DIR
from nin_lightning.status import say


def ranked(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, classes) of the K most probable classes of each row, most probable first. Ties go to
    the lower class index, as argmax (and so the accuracy metrics) decides them."""
    logits = logits.float()
    order = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :k]
    return logits.softmax(dim=1).gather(1, order), order


class ImageBatches(L.LightningDataModule):
    """Images held in memory for `Trainer.predict`, normalised on the device after the transfer, as the
    run's DataModule normalises its test batches."""

    def __init__(self, run: LoadedRun, images: torch.Tensor) -> None:
        super().__init__()
        self.run, self.images = run, images

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.images), batch_size=self.run.dataset.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.run.normalise(batch[0])


@dataclass(frozen=True)
class Prediction:
    """The most probable classes of one image file, most probable first."""

    path: Path
    classes: list[int]
    probabilities: list[float]
    converted: str  # what was changed to fit the dataset ("" when nothing)


def predict_files(run: LoadedRun, paths: Sequence[Path], top: int = DEFAULT_TOP) -> list[Prediction]:
    """The TOP most probable classes of every image in PATHS (files, or folders of PNG/JPEG files)."""
    if top < 1:
        raise UserError(f"--top {top}: give a number of classes >= 1")
    hp = run.model.hparams
    top = min(top, int(hp["num_classes"]))
    images = readable_images(find_images(paths), int(hp["in_channels"]), run.dataset.image_size)
    batch = torch.from_numpy(np.stack([image.pixels for image in images]))
    outputs = run.trainer().predict(run.model, datamodule=ImageBatches(run, batch))
    probs, classes = ranked(torch.cat([logits.float().cpu() for logits in outputs or []]), top)
    return [Prediction(image.path, classes[i].tolist(), probs[i].tolist(), image.converted)
            for i, image in enumerate(images)]


def readable_images(files: Sequence[Path], channels: int, size: int) -> list[ImageFile]:
    """FILES read as the run's images; one that cannot be (damaged, not 8-bit, a decompression bomb) is skipped
    with a line naming it, and the count of skipped files is said at the end. None readable: a UserError."""
    images: list[ImageFile] = []
    bad: list[BadImage] = []
    for path in files:
        try:
            images.append(read_image(path, channels, size))
        except BadImage as exc:
            bad.append(exc)
    if len(bad) == 1 and not images:
        raise bad[0]  # its own line is the error
    for exc in bad:
        say(f"skipped {exc}")
    if bad and not images:
        raise UserError(f"none of the {len(files)} images could be read (each is named above); {FIX}")
    if bad:
        say(f"skipped {len(bad)} of {len(files)} images (each is named above); predicted the other {len(images)}")
    return images


def csv_text(run: LoadedRun, predictions: Sequence[Prediction]) -> str:
    """file, then per rank k: top{k} (the class), top{k}_name (where the dataset names its classes),
    top{k}_prob; and what was converted to fit the dataset."""
    named = run.class_names is not None
    top = len(predictions[0].classes) if predictions else 0
    header = ["file"]
    for k in range(1, top + 1):
        header += [f"top{k}", *([f"top{k}_name"] if named else []), f"top{k}_prob"]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*header, "converted"])
    for p in predictions:
        row: list[Any] = [str(p.path)]
        for cls, prob in zip(p.classes, p.probabilities, strict=True):
            row += [cls, *([run.label(cls)] if named else []), f"{prob:.6f}"]
        writer.writerow([*row, p.converted])
    return text.getvalue()


def default_csv(run: LoadedRun) -> Path:
    """RUN_DIR/predictions/<time>.csv: a new file each time (microseconds, like Hydra's run dirs)."""
    return run.run_dir / PREDICTIONS_DIR / f"{datetime.now():%Y-%m-%d_%H-%M-%S-%f}.csv"


def write_csv(path: Path, run: LoadedRun, predictions: Sequence[Prediction]) -> Path:
    """The predictions as CSV at PATH (written whole or not at all)."""
    return atomic_write(path, csv_text(run, predictions))


def line(run: LoadedRun, prediction: Prediction) -> str:
    """`FILE: 7 0.981 | 1 0.012 | ...` (class names where the dataset has them), and what was converted."""
    ranks = " | ".join(f"{run.label(c)} {p:.3f}" for c, p in zip(prediction.classes, prediction.probabilities,
                                                                   strict=True))
    return f"{prediction.path}: {ranks}" + (f"  (converted {prediction.converted})" if prediction.converted else "")
