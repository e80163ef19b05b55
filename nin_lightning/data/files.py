"""The torchvision-backed datasets' one-line file errors, guarded downloads and extraction of placed archives."""

from __future__ import annotations

import functools
import re
import shutil
import socket
import tarfile
import urllib.error
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nin_lightning.atomic_files import atomic_write
from nin_lightning.config import DatasetConfig
from nin_lightning.data.base import NiNDataModule, Split
from nin_lightning.errors import UserError
from nin_lightning.status import say

DOCS = "docs/data.md"  # each dataset's files, where they go, and their MD5s


def one_line_text(text: object) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def corrupted(path: Path, why: str) -> UserError:
    return UserError(f"{path} is corrupted or truncated ({why}); delete it and re-run with dataset.download=true, "
                     "or copy a good copy there")


def first_problem(cfg: DatasetConfig, expected: list[tuple[Path, str]], check_md5: bool, started: bool,
                  not_found: str, md5_last_first: bool = False) -> UserError | None:
    """The first of EXPECTED (path, MD5) missing (STARTED: some files are there), else the first failing its MD5
    (MD5_LAST_FIRST: from the last: a file still arriving fails before the big ones are read)."""
    lacking = [path for path, _ in expected if not path.is_file()]
    if lacking and started:
        return UserError(f"{lacking[0]} is missing ({cfg.name} is incomplete); re-run with dataset.download=true, "
                         "or copy the file there")
    if lacking:
        return UserError(f"{cfg.name} not found: expected {not_found}; pass dataset.download=true to download it "
                         f"into dataset.root={cfg.root}, or dataset.root=DIR for the directory that already holds it "
                         f"({DOCS})")
    from torchvision.datasets.utils import check_integrity

    if not check_md5:
        return None
    for path, md5 in reversed(expected) if md5_last_first else expected:
        if not check_integrity(str(path), md5):
            return corrupted(path, "MD5 mismatch")
    return None


def md5_problem(path: Path, md5: str) -> UserError | None:
    """PATH's MD5 is not torchvision's MD5 for it (a partial or different download), or None."""
    from torchvision.datasets.utils import check_integrity

    ok = check_integrity(str(path), md5)
    return None if ok else corrupted(path, f"MD5 mismatch: torchvision's copy has MD5 {md5}")


def extract(archive: Path, members: dict[str, Path]) -> None:
    """Copy MEMBERS (name in the .tar.gz -> target path) out of ARCHIVE atomically; no archived path decides where."""
    say(f"extracting {', '.join(sorted(p.name for p in members.values()))} from {archive}")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for name, target in members.items():
                source = tar.extractfile(name) if name in tar.getnames() else None
                if source is None:
                    raise corrupted(archive, f"it holds no file {name}")
                atomic_write(target, functools.partial(shutil.copyfileobj, source, length=1 << 20))
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise corrupted(archive, f"not a complete .tar.gz: {one_line_text(exc)}") from exc


def download(cfg: DatasetConfig, what: str, url: str, dest: Path, fetch: Callable[[], object],
             place: str | None = None) -> None:
    """Run torchvision's `fetch()`; a failure in one line, naming what to copy into DEST (`place`: all files)."""
    try:
        fetch()
    except Exception as exc:
        text = one_line_text(exc)
        urlopen = re.search(r"<urlopen error [^>]*>", text)  # MNIST: the first mirror's error suffices
        reason = urlopen.group(0) if urlopen else (text[:300] or type(exc).__name__)
        # torchvision's MNIST wraps each mirror's URLError in one RuntimeError("Error downloading ...")
        wrapped = isinstance(exc, RuntimeError) and ("Error downloading" in text or "urlopen error" in text)
        if wrapped or isinstance(exc, urllib.error.URLError | TimeoutError | ConnectionError | socket.gaierror):
            raise UserError(f"dataset.download=true: cannot download {what} from {url}: no network ({reason}); "
                            f"download it on a machine with internet access, put {place or what} in {dest} and run "
                            f"with dataset.download=false ({DOCS})") from exc
        if isinstance(exc, OSError):
            raise UserError(f"dataset.download=true: cannot write {what} to {dest} ({reason}); "
                            "check the disk and permissions, or pass dataset.root=DIR") from exc
        if isinstance(exc, RuntimeError) and "corrupted" in reason:
            raise UserError(f"dataset.download=true: the download of {what} from {url} failed its MD5 check "
                            f"({reason}); delete the partial files in {dest} and retry") from exc
        raise


class TorchvisionDataModule(NiNDataModule):
    """A dataset in torchvision's layout under dataset.root, read by `torchvision.datasets.<torchvision_name>`."""

    torchvision_name = ""

    def _tv(self) -> Any:
        from torchvision import datasets

        return getattr(datasets, self.torchvision_name)

    @property
    def root(self) -> Path:
        """dataset.root as an absolute path (what error messages show)."""
        return Path(self.cfg.root).expanduser().resolve()

    def _read(self, source: Path, **split: object) -> Any:
        """torchvision's dataset of SPLIT; a refusal in one line that names the file at fault (or else SOURCE)."""
        try:
            return self._tv()(self.root, download=False, **split)
        except RuntimeError as exc:
            raise self.read_problem(source) or UserError(f"torchvision cannot read {source}: {one_line_text(exc)}") \
                from exc

    def read_problem(self, source: Path) -> UserError | None:
        """What is wrong with the files when torchvision refuses to read SOURCE (a subclass may check SOURCE alone)."""
        return self.file_problem()

    def _split(self, images: np.ndarray | torch.Tensor, labels: object, source: Path) -> Split:
        """uint8 NCHW images (copied contiguous) and int64 labels, with labels checked against num_classes."""
        x, classes = torch.as_tensor(images).contiguous(), self.cfg.num_classes
        y = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
            raise corrupted(source, f"labels span {int(y.min())}..{int(y.max())}, expected 0..{classes - 1}")
        return Split(x, y)
