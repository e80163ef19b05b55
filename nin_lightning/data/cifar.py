"""CIFAR-10 and CIFAR-100 in torchvision's layout (docs/data.md), read by torchvision, which checks every MD5."""

from __future__ import annotations

import functools
from pathlib import Path

from nin_lightning.data import files
from nin_lightning.data.base import Split
from nin_lightning.errors import UserError


class CIFAR10DataModule(files.TorchvisionDataModule):
    """50k training images (val_size of them for validation), the official 10k test set."""

    torchvision_name = "CIFAR10"

    def _folder(self) -> Path:
        return self.root / self._tv().base_folder

    def download(self) -> None:
        cls = self._tv()
        files.download(self.cfg, cls.filename, cls.url, self.root,
                       functools.partial(cls, self.root, train=True, download=True))

    def _expected(self) -> list[tuple[Path, str]]:
        """(path, MD5) of every file torchvision reads."""
        cls, folder = self._tv(), self._folder()
        names = [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]
        return [(folder / name, md5) for name, md5 in names]

    def _lacking(self) -> list[Path]:
        return [path for path, _ in self._expected() if not path.is_file()]

    def placed_archives(self) -> list[Path]:
        archive = self.root / self._tv().filename
        return [archive] if self._lacking() and archive.is_file() else []

    def unpack(self) -> None:
        """The placed archive, MD5-checked, gives the folder the files it lacks (existing ones are kept)."""
        for archive in self.placed_archives():
            if (problem := files.md5_problem(archive, self._tv().tgz_md5)) is not None:
                raise problem
            files.extract(archive, {f"{path.parent.name}/{path.name}": path for path in self._lacking()})

    def file_problem(self, check_md5: bool = True) -> UserError | None:
        expected, archive = self._expected(), self.root / self._tv().filename
        return files.first_problem(self.cfg, expected, check_md5, len(self._lacking()) < len(expected),
                                   f"{self._folder()} (or torchvision's archive {archive.name} in {archive.parent}, "
                                   "which is MD5-checked and extracted)")

    def _part(self, train: bool) -> Split:
        ds = self._read(self._folder(), train=train)
        source = self._folder() / (ds.train_list if train else ds.test_list)[0][0]
        self.class_names = list(ds.classes)  # from the dataset's meta file: saved with the model (module.py)
        # torchvision keeps (N, 32, 32, 3) HWC; the base wants contiguous NCHW
        return self._split(ds.data.transpose(0, 3, 1, 2), ds.targets, source)

    def load(self) -> tuple[Split, Split]:
        return self._part(train=True), self._part(train=False)


class CIFAR100DataModule(CIFAR10DataModule):
    """The 100 fine labels (`fine_labels`); same layout and split sizes as CIFAR-10."""

    torchvision_name = "CIFAR100"
