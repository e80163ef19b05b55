"""The shared LightningDataModule: uint8 tensors in memory, whole batches, on-device augmentation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from nin_lightning.config import DatasetConfig
from nin_lightning.data import augment
from nin_lightning.errors import UserError


@dataclass
class Split:
    """Images as uint8 (N, C, H, W) and labels as int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 NCHW, got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])


class BatchTensorDataset(Dataset):
    """A map-style dataset that serves a whole batch with one indexing op (`__getitems__`)."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split.images[i], self.split.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        return self.split.images[index], self.split.labels[index]


def _as_batch(batch: Any) -> Any:
    """collate_fn for `__getitems__`: the batch is already stacked."""
    return batch


def split_train_val(n: int, val_size: int, seed: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation of range(n): (train indices, val indices)."""
    if val_size >= n:
        raise UserError(
            f"dataset.val_size={val_size} leaves no training data: {name} has {n} training images; "
            f"pass dataset.val_size=<{n}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


# Mirroring turns digits into other digits or none (2, 5, 7 ...): these datasets never flip.
DIGIT_DATASETS = frozenset({"digits", "mnist", "svhn"})


class NiNDataModule(L.LightningDataModule):
    """Base for all datasets. Subclasses implement `load()` and, if downloadable, `download()`."""

    def __init__(self, cfg: DatasetConfig) -> None:
        super().__init__()
        if cfg.flip and cfg.name in DIGIT_DATASETS:
            raise UserError(f"dataset.flip=true: {cfg.name} holds digits, which a mirror image turns into "
                            "other digits or none; pass dataset.flip=false")
        self.cfg = cfg
        self.train_split: Split | None = None
        self.val_split: Split | None = None
        self.test_split: Split | None = None
        # uint8 batch -> float batch, replacing mean/std normalization (dataset.preprocess != none)
        self.preprocessor: Callable[[torch.Tensor], torch.Tensor] | None = None

    # --- what a dataset provides -------------------------------------------------------------
    def load(self) -> tuple[Split, Split]:
        """Return (full training set, official test set)."""
        raise NotImplementedError

    def download(self) -> None:
        """Fetch the files into cfg.root (only called with dataset.download=true, on rank 0)."""

    def split_val(self, train: Split) -> tuple[Split, Split]:
        """(train, val) from the full training set: a seeded random subset of val_size."""
        cfg = self.cfg
        train_idx, val_idx = split_train_val(len(train), cfg.val_size, cfg.split_seed, cfg.name)
        return train.subset(train_idx), train.subset(val_idx)

    def build_preprocessor(self, train: Split) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """dataset.preprocess: a transform fitted on the training split only (None: mean/std)."""
        if self.cfg.preprocess == "gcn_zca":
            from nin_lightning.data import preprocess

            return preprocess.build(self.cfg, train.images)
        return None

    # --- Lightning hooks -----------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.cfg.download:
            self.download()

    def setup(self, stage: str | None = None) -> None:
        if self.train_split is not None:
            return
        full_train, test = self.load()
        self.train_split, self.val_split = self.split_val(full_train)
        self.test_split = test
        self.preprocessor = self.build_preprocessor(self.train_split)

    def _loader(self, split: Split | None, batch_size: int, shuffle: bool) -> DataLoader:
        if split is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        return DataLoader(
            BatchTensorDataset(split),
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=_as_batch,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_split, self.cfg.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_split, self.cfg.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_split, self.cfg.eval_batch_size, shuffle=False)

    def transform_batch(self, images: torch.Tensor, training: bool) -> torch.Tensor:
        """A uint8 batch on its device -> the model's float input; augmentation only while training.

        Default: crop/flip on uint8 (zero padding is black), normalize, cutout.
        With a preprocessor (GCN+ZCA): whiten first, then crop/flip/cutout the whitened images. The
        whitening was fitted on whole, unshifted images, so it must see them that way; padding then
        fills with 0, which is the whitened data's mean, like cutout after normalization.
        """
        cfg = self.cfg
        if self.preprocessor is None:
            if training:
                images = augment.random_crop_flip(images, cfg.crop_padding, cfg.padding_mode, cfg.flip)
            images = augment.normalize(images, cfg.mean, cfg.std)
        else:
            images = self.preprocessor(images)
            if training:
                images = augment.random_crop_flip(images, cfg.crop_padding, cfg.padding_mode, cfg.flip)
        if training and cfg.cutout:
            images = augment.cutout(images, cfg.cutout)
        return images

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalize (or preprocess) on the device; augment only while training."""
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        return self.transform_batch(images, training), labels
