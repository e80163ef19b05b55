"""`predict`: PNG/JPEG files read as the dataset's uint8 images, classified as the run's test images are (device,
precision, TTA; `Trainer.predict`): an image that is one of the test set's gets the class `evaluate` gives it."""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from nin_lightning.errors import UserError
from nin_lightning.inference.loading import LoadedRun
from nin_lightning.inference.run_files import DEFAULT_TOP
from nin_lightning.status import say

SUFFIXES = (".png", ".jpg", ".jpeg")  # what a folder is searched for (case-insensitive)
FORMATS = ("PNG", "JPEG", "MPO")  # MPO: a phone's or camera's JPEG holding more pictures; its first is read
# Pillow modes of 8-bit pixels: they convert to grey ("L") or RGB without changing what a value means.
EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
FIX = "pass PNG or JPEG files, or folders of them"


class BadImage(UserError):
    """One image file that cannot be used (its line names it); the others can."""


@dataclass(frozen=True)
class ImageFile:
    """One image as the model's dataset holds its images."""

    path: Path
    pixels: np.ndarray  # uint8 (C, H, W)
    converted: str  # what was changed to fit the dataset, e.g. "RGB->L 28x28->8x8"; "" when nothing


def find_images(paths: Sequence[Path]) -> list[Path]:
    """The files given, and the PNG/JPEG files of each folder given (sorted by name, not recursive), each once."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not found:
                raise UserError(f"{path}: no PNG or JPEG files in it ({', '.join('*' + s for s in SUFFIXES)}); {FIX}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or directory; {FIX}")
    if not files:
        raise UserError(f"no images given; {FIX}")
    unique = {path.resolve(): path for path in reversed(files)}  # a file named twice counts once, first place
    return [path for path in files if unique.get(path.resolve()) is path]


def read_image(path: Path, channels: int, size: int) -> ImageFile:
    """PATH as uint8 (CHANNELS, SIZE, SIZE): converted where it differs, or a one-line UserError naming it."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if channels not in (1, 3):
        raise UserError(f"the model takes {channels}-channel images, which PNG and JPEG files do not hold")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # decoding it could fill the memory
            with Image.open(path) as opened:
                opened.load()  # decode now: a truncated file fails here, not later
                image, kind = opened.copy(), opened.format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"{path}: too many pixels to decode safely ({' '.join(str(exc).split())[:90]}); shrink it "
                       "or leave it out") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:  # Pillow's errors for damaged files
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise BadImage(f"{path}: not a readable PNG or JPEG image ({reason}); replace it or leave it out") from exc
    if kind not in FORMATS:
        raise BadImage(f"{path}: a {kind} image; predict reads PNG and JPEG: save it as one, or leave it out")
    if image.mode not in EIGHT_BIT_MODES:
        raise BadImage(f"{path}: its pixels are {image.mode} (16-bit or floating point), not 8-bit; save it as an "
                       "8-bit PNG or JPEG, or leave it out")
    notes = []
    target = "L" if channels == 1 else "RGB"
    if image.mode != target:
        notes.append(f"{image.mode}->{target}")
        image = image.convert(target)
    if image.size != (size, size):
        width, height = image.size
        notes.append(f"{width}x{height}->{size}x{size}" + (" (centre crop)" if width != height else ""))
        image = ImageOps.fit(image, (size, size), method=Image.Resampling.BILINEAR)  # antialiased when shrinking
    pixels = np.asarray(image, dtype=np.uint8)
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return ImageFile(path, np.ascontiguousarray(pixels), " ".join(notes))


def ranked(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, classes) of each row's K most probable classes; ties go to the lower index, as argmax's."""
    logits = logits.float()
    order = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :k]
    return logits.softmax(dim=1).gather(1, order), order


class ImageBatches(L.LightningDataModule):
    """Images in memory for `Trainer.predict`, normalised on the device as the run's test batches are."""

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
    """The TOP most probable classes of every image in PATHS; an unreadable one is skipped with a line naming it."""
    if top < 1:
        raise UserError(f"--top {top}: give a number of classes >= 1")
    hp = run.model.hparams
    top = min(top, int(hp["num_classes"]))
    files = find_images(paths)
    images: list[ImageFile] = []
    bad: list[BadImage] = []
    for path in files:
        try:
            images.append(read_image(path, int(hp["in_channels"]), run.dataset.image_size))
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
    batch = torch.from_numpy(np.stack([image.pixels for image in images]))
    outputs = run.trainer().predict(run.model, datamodule=ImageBatches(run, batch))
    probs, classes = ranked(torch.cat([logits.float().cpu() for logits in outputs or []]), top)
    return [Prediction(image.path, classes[i].tolist(), probs[i].tolist(), image.converted)
            for i, image in enumerate(images)]


def csv_text(run: LoadedRun, predictions: Sequence[Prediction]) -> str:
    """file, per rank k: top{k}, top{k}_name (where the dataset names its classes), top{k}_prob; converted."""
    named = run.class_names is not None
    top = len(predictions[0].classes) if predictions else 0
    header = ["file"]
    for k in range(1, top + 1):
        header += [f"top{k}", *([f"top{k}_name"] if named else []), f"top{k}_prob"]
    rows: list[list[Any]] = [[*header, "converted"]]
    for p in predictions:
        row: list[Any] = [str(p.path)]
        for cls, prob in zip(p.classes, p.probabilities, strict=True):
            row += [cls, *([run.label(cls)] if named else []), f"{prob:.6f}"]
        rows.append([*row, p.converted])
    return csv_rows(rows)


def csv_rows(rows: Sequence[Sequence[Any]]) -> str:
    """ROWS as CSV text, one line each."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue()


def line(run: LoadedRun, prediction: Prediction) -> str:
    """`FILE: 7 0.981 | 1 0.012 | ...` (class names where the dataset has them), and what was converted."""
    ranks = " | ".join(f"{run.label(c)} {p:.3f}" for c, p in zip(prediction.classes, prediction.probabilities,
                                                                   strict=True))
    return f"{prediction.path}: {ranks}" + (f"  (converted {prediction.converted})" if prediction.converted else "")
