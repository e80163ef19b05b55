"""MNIST in torchvision's layout (docs/data.md); idx headers and sizes are checked here (torchvision does not)."""

from __future__ import annotations

import functools
import gzip
import struct
import zlib
from pathlib import Path

from nin_lightning.atomic_files import atomic_write
from nin_lightning.data import files
from nin_lightning.data.base import Split
from nin_lightning.errors import UserError

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
SIDE = 28
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
GZ_LISTED = ", ".join(f"{name}.gz" for pair in FILES.values() for name in pair)  # what error messages name


def _check_idx(path: Path, head: bytes, size: int, labels: bool) -> int:
    """The item count of a valid idx file with this `head` (its first bytes) and total `size`."""
    magic, header_len = (LABELS_MAGIC, 8) if labels else (IMAGES_MAGIC, 16)
    if len(head) < header_len:
        raise files.corrupted(path, f"{size} bytes, shorter than the {header_len}-byte idx header")
    found, n = struct.unpack(">ii", head[:8])
    if found != magic:
        raise files.corrupted(path, f"idx magic number {found}, expected {magic}")
    if not labels:
        rows, cols = struct.unpack(">ii", head[8:16])
        if (rows, cols) != (SIDE, SIDE):
            raise files.corrupted(path, f"images of {rows}x{cols}, expected {SIDE}x{SIDE}")
    expected = header_len + n * (1 if labels else SIDE * SIDE)
    if size != expected:
        raise files.corrupted(path, f"{size} bytes, expected {expected} for {n} items")
    return n


def _placed_gz(raw_dir: Path, name: str) -> Path | None:
    """NAME.gz placed in torchvision's `<root>/MNIST/raw/`, or else in `<root>` itself."""
    return next((gz for gz in (raw_dir / f"{name}.gz", raw_dir.parent.parent / f"{name}.gz") if gz.is_file()), None)


def _decompress_checked(gz: Path, raw: Path, labels: bool) -> None:
    """Check `gz` (gzip, idx header, then torchvision's MD5) and write it, decompressed, to `raw` atomically."""
    from torchvision.datasets import MNIST

    try:
        with gzip.open(gz, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise files.corrupted(gz, f"not a complete gzip file: {exc}") from exc
    _check_idx(gz, data[:16], len(data), labels)
    md5 = dict(MNIST.resources).get(gz.name)
    if md5 is not None and (problem := files.md5_problem(gz, md5)) is not None:
        raise problem
    try:
        atomic_write(raw, data)  # safe with several ranks: a reader sees the whole file or none
    except OSError as exc:
        raise UserError(f"cannot decompress {gz} to {raw} ({exc}); decompress it yourself (gunzip -k {gz}) "
                        "or make the directory writable") from exc


class MNISTDataModule(files.TorchvisionDataModule):
    """60k training images (val_size of them for validation), the official 10k test set."""

    torchvision_name = "MNIST"

    def _raw_dir(self) -> Path:
        return self.root / "MNIST" / "raw"

    def download(self) -> None:
        files.download(self.cfg, GZ_LISTED, self._tv().mirrors[0], self._raw_dir(),
                       functools.partial(self._tv(), self.root, train=True, download=True))

    def _legacy(self) -> bool:
        """torchvision still reads the old `MNIST/processed/{training,test}.pt` when both exist."""
        processed = self._raw_dir().parent / "processed"
        return (processed / "training.pt").is_file() and (processed / "test.pt").is_file()

    def _check(self, decompress: bool) -> None:
        """A one-line UserError unless the idx files are present and consistent (`decompress`: a checked .gz counts)."""
        raw_dir = self._raw_dir()
        if self._legacy():
            return
        for split, (image_file, label_file) in FILES.items():
            counts = []
            for name, labels in ((image_file, False), (label_file, True)):
                raw = raw_dir / name
                gz = _placed_gz(raw_dir, name) if decompress and not raw.is_file() else None
                if gz is not None:
                    _decompress_checked(gz, raw, labels)
                if not raw.is_file() and raw_dir.is_dir() and any(raw_dir.iterdir()):
                    raise UserError(f"{raw} is missing (MNIST is incomplete); re-run with dataset.download=true, "
                                    f"or copy the file (or {raw.name}.gz) there")
                if not raw.is_file():
                    raise UserError(f"mnist not found: expected {raw_dir}/{GZ_LISTED} (the four files as "
                                    "downloaded, MD5-checked and decompressed at the start, or already decompressed; "
                                    f"the .gz files may also sit in {raw_dir.parent.parent} itself); pass "
                                    "dataset.download=true to download them, or dataset.root=DIR for the directory "
                                    f"that holds them or MNIST/raw/ ({files.DOCS})")
                with open(raw, "rb") as f:
                    head = f.read(16)
                counts.append(_check_idx(raw, head, raw.stat().st_size, labels))
            if counts[0] != counts[1]:
                raise files.corrupted(raw_dir / label_file,
                                      f"{counts[1]} labels for the {counts[0]} {split} images in {image_file}")

    def placed_archives(self) -> list[Path]:
        raw_dir = self._raw_dir()
        if self._legacy():
            return []
        names = [name for pair in FILES.values() for name in pair if not (raw_dir / name).is_file()]
        return [gz for gz in (_placed_gz(raw_dir, name) for name in names) if gz is not None]

    def unpack(self) -> None:
        """Placed .gz files (in MNIST/raw/ or the root), checked and MD5-checked, decompressed into MNIST/raw/."""
        if self.placed_archives():
            self._check(decompress=True)

    def file_problem(self, check_md5: bool = True) -> UserError | None:
        """Read-only (no .gz decompressed: local rank 0's download does that): all four idx files complete."""
        try:
            self._check(decompress=False)
        except UserError as exc:
            return exc
        return None

    def _part(self, train: bool) -> Split:
        source = self._raw_dir() / FILES["train" if train else "test"][1]
        ds = self._read(source, train=train)
        return self._split(ds.data.unsqueeze(1), ds.targets, source)

    def load(self) -> tuple[Split, Split]:
        self._check(decompress=True)
        return self._part(train=True), self._part(train=False)
