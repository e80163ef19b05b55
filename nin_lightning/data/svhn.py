"""SVHN in torchvision's layout, with the paper's train+extra validation split (docs/data.md)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from nin_lightning.config import DatasetConfig
from nin_lightning.data import files
from nin_lightning.data.base import Split, val_count
from nin_lightning.errors import UserError

TRAIN_SHARE, EXTRA_SHARE = 2, 1  # the paper's 400 : 200 per class


def stratified_pick(labels: torch.Tensor, per_class: int, num_classes: int, generator: torch.Generator,
                    source: str) -> torch.Tensor:
    """Sorted indices of `per_class` random images of each class."""
    picked = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().view(-1)
        if len(idx) < per_class:
            raise UserError(f"dataset.val_size is too large: the validation split needs {per_class} images of "
                            f"digit {c} from {source}, which has {len(idx)}; pass a smaller dataset.val_size "
                            "(a multiple of 30)")
        picked.append(idx[torch.randperm(len(idx), generator=generator)[:per_class]])
    return torch.cat(picked).sort().values


class SVHNDataModule(files.TorchvisionDataModule):
    """73,257 training images (+ 531,131 with dataset.split=train+extra); the official 26,032 test images."""

    torchvision_name = "SVHN"

    def __init__(self, cfg: DatasetConfig) -> None:
        super().__init__(cfg)
        self.official_train_size: int | None = None  # len(train_32x32.mat) inside the train+extra split

    def _parts(self) -> tuple[str, ...]:
        """The .mat files the run reads, in download order."""
        return ("train", "extra", "test") if self.cfg.split == "train+extra" else ("train", "test")

    def download(self) -> None:
        from torchvision.datasets.utils import download_url

        needed = " and ".join(self._tv().split_list[part][1] for part in self._parts())
        for part in self._parts():
            url, filename, md5 = self._tv().split_list[part]
            # download_url keeps a file whose MD5 already matches, and fetches it otherwise
            fetch = functools.partial(download_url, url, str(self.root), filename, md5)
            files.download(self.cfg, filename, url, self.root, fetch, place=needed)

    def file_problem(self, check_md5: bool = True) -> UserError | None:
        """The first file missing in download order, then one failing its MD5 in reverse download order."""
        split_list, root = self._tv().split_list, self.root
        expected = [(root / split_list[part][1], split_list[part][2]) for part in self._parts()]
        names = [path.name for path, _ in expected]
        return files.first_problem(self.cfg, expected, check_md5,
                                   any((root / name).is_file() for _, name, _ in split_list.values()),
                                   f"{root / names[0]} and {' and '.join(names[1:])} in the same dir "
                                   "(torchvision's SVHN files, MD5-checked)", md5_last_first=True)

    def read_problem(self, source: Path) -> UserError | None:
        """A file missing, else the one torchvision refused failing its MD5 (the others may not be read yet)."""
        md5 = {name: md5 for _, name, md5 in self._tv().split_list.values()}[source.name]
        return self.file_problem(check_md5=False) or files.first_problem(self.cfg, [(source, md5)], True, True, "")

    def _part(self, part: str) -> Split:
        source = self.root / self._tv().split_list[part][1]
        ds = self._read(source, split=part)
        # torchvision already transposed X (32, 32, 3, N) to (N, 3, 32, 32) and mapped label 10 to 0
        return self._split(ds.data, ds.labels, source)

    def load(self) -> tuple[Split, Split]:
        train = self._part("train")
        if self.cfg.split == "train":
            return train, self._part("test")
        self.official_train_size = len(train)
        extra = self._part("extra")
        images = torch.cat([train.images, extra.images])
        labels = torch.cat([train.labels, extra.labels])
        del train, extra
        return Split(images, labels), self._part("test")

    def split_val(self, train: Split) -> tuple[Split, Split]:
        if self.cfg.split == "train":
            return super().split_val(train)
        cfg, n_train = self.cfg, self.official_train_size
        assert n_train is not None, "load() sets official_train_size for train+extra"
        unit = (TRAIN_SHARE + EXTRA_SHARE) * cfg.num_classes  # the paper's split is made of whole units
        count = val_count(cfg.val_size, len(train))
        if isinstance(cfg.val_size, float):  # a fraction of train+extra: the nearest whole number of units
            count = max(1, round(count / unit)) * unit
        per_class, rest = divmod(count, unit)
        if rest or per_class == 0:
            raise UserError(f"dataset.val_size={cfg.val_size} cannot be split 2:1 between train and extra over "
                            f"{cfg.num_classes} classes (the paper: 6000 = 10 x (400 + 200)); pass "
                            f"dataset.val_size=6000 or another positive multiple of {unit}")
        g = torch.Generator().manual_seed(cfg.split_seed)
        from_train = stratified_pick(train.labels[:n_train], TRAIN_SHARE * per_class, cfg.num_classes, g,
                                     "train_32x32.mat")
        from_extra = n_train + stratified_pick(train.labels[n_train:], EXTRA_SHARE * per_class,
                                               cfg.num_classes, g, "extra_32x32.mat")
        val_idx = torch.cat([from_train, from_extra])
        keep = torch.ones(len(train), dtype=torch.bool)
        keep[val_idx] = False
        return train.subset(keep.nonzero().view(-1)), train.subset(val_idx)
