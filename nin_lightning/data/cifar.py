"""CIFAR-10 and CIFAR-100 in torchvision's layout (docs/data.md), read by torchvision, which checks every MD5."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets.utils import check_integrity

from nin_lightning.data import files
from nin_lightning.data.base import NiNDataModule, Split
from nin_lightning.errors import UserError


class CIFAR10DataModule(NiNDataModule):
    """50k training images (val_size of them for validation), the official 10k test set."""

    torchvision_name = "CIFAR10"

    def _tv(self) -> type:
        from torchvision import datasets

        return getattr(datasets, self.torchvision_name)

    def _folder(self) -> Path:
        return files.root_dir(self.cfg) / self._tv().base_folder

    def download(self) -> None:
        cls = self._tv()
        root = files.root_dir(self.cfg)
        files.download(self.cfg, cls.filename, cls.url, root, lambda: cls(root, train=True, download=True))

    def _expected(self) -> list[tuple[str, str]]:
        """(file name in the folder, its MD5): every file torchvision reads."""
        cls = self._tv()
        return [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]

    def _lacking(self) -> list[str]:
        """The files of `_expected()` that the folder lacks."""
        folder = self._folder()
        return [name for name, _ in self._expected() if not (folder / name).is_file()]

    def _archive(self) -> Path:
        return files.root_dir(self.cfg) / self._tv().filename

    def placed_archives(self) -> list[Path]:
        archive = self._archive()
        return [archive] if self._lacking() and archive.is_file() else []

    def unpack(self) -> None:
        """The placed archive, MD5-checked, gives the folder the files it lacks (existing ones are kept)."""
        for archive in self.placed_archives():
            if (problem := files.md5_problem(archive, self._tv().tgz_md5)) is not None:
                raise problem
            folder = self._folder()
            files.extract(archive, {f"{folder.name}/{name}": folder / name for name in self._lacking()})

    def file_problem(self, check_md5: bool = True) -> UserError | None:
        """The first file that is missing or fails its MD5 (checked only once all are there)."""
        folder, expected, lacking = self._folder(), self._expected(), self._lacking()
        if len(lacking) == len(expected):
            archive = self._archive()
            return files.missing(self.cfg, f"{folder} (or torchvision's archive {archive.name} in {archive.parent}, "
                                           "which is MD5-checked and extracted)")
        if lacking:
            return files.incomplete(self.cfg, folder / lacking[0])
        for name, md5 in expected if check_md5 else []:
            if not check_integrity(str(folder / name), md5):
                return files.corrupted(folder / name, "MD5 mismatch")
        return None

    def _read(self, train: bool) -> Split:
        cls = self._tv()
        try:
            ds = cls(files.root_dir(self.cfg), train=train, download=False)
        except RuntimeError as exc:  # name the file that made torchvision refuse the dataset
            raise self.file_problem() or UserError(f"torchvision cannot read {self._folder()}: "
                                                   f"{files.one_line_text(exc)}") from exc
        source = self._folder() / (cls.train_list if train else cls.test_list)[0][0]
        self.class_names = list(ds.classes)  # from the dataset's meta file: saved with the model (module.py)
        # torchvision keeps (N, 32, 32, 3) HWC; the base wants contiguous NCHW
        return files.to_split(self.cfg, ds.data.transpose(0, 3, 1, 2), ds.targets, source)

    def load(self) -> tuple[Split, Split]:
        return self._read(train=True), self._read(train=False)


class CIFAR100DataModule(CIFAR10DataModule):
    """The 100 fine labels (`fine_labels`); same layout and split sizes as CIFAR-10."""

    torchvision_name = "CIFAR100"
