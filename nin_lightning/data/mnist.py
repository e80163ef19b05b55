"""MNIST from torchvision's layout: `<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.

torchvision reads the raw idx files and only checks that they exist, so `load()` first checks each
file's idx header (magic number, dimensions) and size. A file present only as `.gz` (as distributed)
is checked and decompressed next to it, as torchvision's own download step does.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

from nin_lightning.data import files
from nin_lightning.data.base import NiNDataModule, Split
from nin_lightning.errors import UserError
from nin_lightning.rundir.atomic import atomic_write

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
SIDE = 28
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _check_idx(path: Path, head: bytes, size: int, labels: bool) -> int:
    """The item count of a valid idx file with this `head` (its first bytes) and total `size`."""
    magic = LABELS_MAGIC if labels else IMAGES_MAGIC
    header_len = 8 if labels else 16
    if len(head) < header_len:
        raise files.corrupted(path, f"{size} bytes, shorter than the {header_len}-byte idx header")
    found, n = struct.unpack(">ii", head[:8])
    if found != magic:
        raise files.corrupted(path, f"idx magic number {found}, expected {magic}")
    item = 1
    if not labels:
        rows, cols = struct.unpack(">ii", head[8:16])
        if (rows, cols) != (SIDE, SIDE):
            raise files.corrupted(path, f"images of {rows}x{cols}, expected {SIDE}x{SIDE}")
        item = rows * cols
    expected = header_len + n * item
    if size != expected:
        raise files.corrupted(path, f"{size} bytes, expected {expected} for {n} items")
    return n


def _decompress_checked(gz: Path, raw: Path, labels: bool) -> None:
    """Check `gz`'s content and write it, decompressed, to `raw` atomically (safe with several ranks)."""
    try:
        with gzip.open(gz, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise files.corrupted(gz, f"not a complete gzip file: {exc}") from exc
    _check_idx(gz, data[:16], len(data), labels)
    try:
        atomic_write(raw, data)  # safe with several ranks: a reader sees the whole file or none
    except OSError as exc:
        raise UserError(f"cannot decompress {gz} to {raw} ({exc}); decompress it yourself (gunzip -k {gz}) "
                        "or make the directory writable") from exc


def check_raw_files(raw_dir: Path, decompress: bool = True) -> None:
    """Raise a one-line UserError unless the four idx files are present and consistent.

    `decompress`: a file present only as `.gz` counts, and is decompressed next to it.
    """
    for split, (image_file, label_file) in FILES.items():
        counts = []
        for name, labels in ((image_file, False), (label_file, True)):
            raw, gz = raw_dir / name, raw_dir / f"{name}.gz"
            if decompress and not raw.is_file() and gz.is_file():
                _decompress_checked(gz, raw, labels)
            if not raw.is_file():
                raise _not_found(raw_dir, raw)
            with open(raw, "rb") as f:
                head = f.read(16)
            counts.append(_check_idx(raw, head, raw.stat().st_size, labels))
        if counts[0] != counts[1]:
            raise files.corrupted(raw_dir / label_file,
                                  f"{counts[1]} labels for the {counts[0]} {split} images in {image_file}")


def _not_found(raw_dir: Path, path: Path) -> UserError:
    anything = raw_dir.is_dir() and any(raw_dir.iterdir())
    if anything:
        return UserError(f"{path} is missing (MNIST is incomplete); re-run with dataset.download=true, "
                         f"or copy the file (or {path.name}.gz) there")
    return UserError(f"mnist not found: expected {path} (or {path.name}.gz); pass dataset.download=true to "
                     "download it, or dataset.root=DIR for the directory that holds MNIST/raw/")


class MNISTDataModule(NiNDataModule):
    """60k training images (val_size of them for validation), the official 10k test set."""

    def _raw_dir(self) -> Path:
        return files.root_dir(self.cfg) / "MNIST" / "raw"

    def download(self) -> None:
        from torchvision.datasets import MNIST

        root = files.root_dir(self.cfg)
        files.download(self.cfg, "MNIST", MNIST.mirrors[0], self._raw_dir(),
                       lambda: MNIST(root, train=True, download=True))

    def _legacy(self) -> bool:
        """torchvision still reads the old `MNIST/processed/{training,test}.pt` when both exist."""
        processed = self._raw_dir().parent / "processed"
        return (processed / "training.pt").is_file() and (processed / "test.pt").is_file()

    def file_problem(self, check_md5: bool = True) -> UserError | None:
        """Read-only (no .gz decompressed: local rank 0's download does that): all four idx files complete."""
        if self._legacy():
            return None
        try:
            check_raw_files(self._raw_dir(), decompress=False)
        except UserError as exc:
            return exc
        return None

    def _read(self, train: bool) -> Split:
        from torchvision.datasets import MNIST

        ds = MNIST(files.root_dir(self.cfg), train=train, download=False)
        source = self._raw_dir() / FILES["train" if train else "test"][1]
        return files.to_split(self.cfg, ds.data.unsqueeze(1), ds.targets, source)

    def load(self) -> tuple[Split, Split]:
        if not self._legacy():
            check_raw_files(self._raw_dir())
        return self._read(train=True), self._read(train=False)
