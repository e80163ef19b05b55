"""Image files for `predict`: PNG or JPEG files, or folders of them, read as the dataset's uint8 images.

An image with another number of channels is converted (RGB -> grey by ITU-R 601-2 luma, grey -> RGB by
copying, alpha dropped) and one of another size is resized, its shorter side to the dataset's size and
then cropped at the centre; each file says what was converted. A file that is not an 8-bit PNG or JPEG,
or one too large to decode safely (Pillow's decompression-bomb limit), is a `BadImage` whose one line names
it: `predict` skips it and goes on with the others.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nin_lightning.errors import UserError

SUFFIXES = (".png", ".jpg", ".jpeg")  # what a folder is searched for (case-insensitive)
FORMATS = ("PNG", "JPEG")
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
