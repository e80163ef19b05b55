"""The shared LightningDataModule: uint8 tensors in memory, whole batches, on-device augmentation."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from nin_lightning.config import DIGIT_DATASETS, DatasetConfig
from nin_lightning.data import augment
from nin_lightning.data.resident import DeviceBatches, derived_seed
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

    # a map-style dataset that serves a whole batch with one indexing op (`__getitems__`)
    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def _as_batch(batch: Any) -> Any:
    """collate_fn for `__getitems__`: the batch is already stacked."""
    return batch


def val_count(val_size: int | float, n: int) -> int:
    """`dataset.val_size` as a number of the N training images: a count as it is, a fraction of N rounded (>= 1)."""
    if isinstance(val_size, float):
        return max(1, round(val_size * n))
    return val_size


def pad_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """An evaluation batch padded to SIZE images (copies of its first) for a compiled model (module.py cuts it)."""
    missing = size - len(images)
    if missing <= 0:
        return images
    return torch.cat([images, images[:1].expand(missing, *images.shape[1:])])


def _run_seed() -> int:
    """The run's seed (`seed`), as Lightning's seed_everything left it in the environment."""
    return int(os.environ.get("PL_GLOBAL_SEED", "0"))


# How long the other ranks of a node wait for local rank 0's download, and how often they look.
DOWNLOAD_WAIT_S = 3600.0
DOWNLOAD_POLL_S = 2.0


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
        self.class_names: list[str] | None = None  # the classes' names in label order, where the files have them
        # uint8 batch -> float batch, replacing mean/std normalization (dataset.preprocess != none)
        self.preprocessor: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._augment_generator: torch.Generator | None = None  # DDP ranks > 0 (augment_generator)
        self.normalizer = augment.Normalizer(cfg.mean, cfg.std)  # its constants stay on the device
        # what the SpeedPlan decided for the data (use_plan): splits on the device, one batch shape
        self.device_resident = False
        self.static_shapes = False
        self._resident: dict[tuple[str, torch.device], Split] = {}

    reads_root = True  # its files are in cfg.root (digits: in scikit-learn's wheel)

    def sizes(self) -> dict[str, int]:
        """Images per split (after setup) as metrics.json records them: {"data/train_size": N, ...}."""
        splits = (("train", self.train_split), ("val", self.val_split), ("test", self.test_split))
        return {f"data/{name}_size": len(split) if split is not None else 0 for name, split in splits}

    def describe(self) -> str:
        """`data: NAME (ROOT): N train / N val / N test images of CxHxW, K classes` (after setup)."""
        cfg = self.cfg
        sizes = " / ".join(f"{n:,} {key[5:-5]}" for key, n in self.sizes().items())
        where = f" in {Path(cfg.root).expanduser()}" if self.reads_root else ""
        return (f"data: {cfg.name}{where}: {sizes} images of {cfg.in_channels}x{cfg.image_size}x{cfg.image_size}, "
                f"{cfg.num_classes} classes")

    def split_note(self) -> str | None:
        """One line when the validation split holds at least as many images as the training split (after setup)."""
        n_train, n_val = (len(s) if s is not None else 0 for s in (self.train_split, self.val_split))
        if n_val == 0 or n_val < n_train:
            return None
        return (f"dataset.val_size={self.cfg.val_size} gives validation {n_val:,} images and training only "
                f"{n_train:,} of {self.cfg.name}'s {n_train + n_val:,}; for a larger training split pass a smaller "
                "dataset.val_size, e.g. the fraction dataset.val_size=0.1")

    # --- what a dataset provides -------------------------------------------------------------
    def load(self) -> tuple[Split, Split]:
        """Return (full training set, official test set)."""
        raise NotImplementedError

    def download(self) -> None:
        """Fetch the files into cfg.root (only called with dataset.download=true, on local rank 0)."""

    def placed_archives(self) -> list[Path]:
        """Archives placed in cfg.root by hand (torchvision's names) whose missing files `unpack` would extract."""
        return []

    def unpack(self) -> None:
        """Check and extract `placed_archives()` into torchvision's layout; no existing file is overwritten."""

    def file_problem(self, check_md5: bool = True) -> UserError | None:
        """What `load()` would refuse about the files in cfg.root, or None (`check_md5=False`: only the cheap)."""
        return None

    def split_val(self, train: Split) -> tuple[Split, Split]:
        """(train, val) from the full training set: a seeded random subset of val_size."""
        cfg, n = self.cfg, len(train)
        count = val_count(cfg.val_size, n)
        if count >= n:
            raise UserError(f"dataset.val_size={cfg.val_size} leaves no training data: {cfg.name} has {n} training "
                            f"images; pass dataset.val_size=<{n}, or a fraction such as dataset.val_size=0.1")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.split_seed))
        return train.subset(perm[count:].sort().values), train.subset(perm[:count].sort().values)

    # --- Lightning hooks -----------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Local rank 0: download (dataset.download), or else extract archives placed in cfg.root by hand."""
        if self.cfg.download:
            self.download()
        else:
            self.unpack()

    def wait_for_data(self) -> None:
        """On a node's other ranks: poll the files until local rank 0's download completes them."""
        deadline = time.monotonic() + DOWNLOAD_WAIT_S
        while (problem := self.file_problem()) is not None:
            if time.monotonic() >= deadline:
                reason = str(problem).split("; ")[0]
                raise UserError(f"dataset.download=true: waited {DOWNLOAD_WAIT_S:g} s for local rank 0 to download "
                                f"{self.cfg.name}, still {reason}; see local rank 0's error, or download once with "
                                "one process and run with dataset.download=false")
            time.sleep(DOWNLOAD_POLL_S)

    def setup(self, stage: str | None = None) -> None:
        if self.train_split is not None:
            return
        full_train, self.test_split = self.load()
        self.train_split, self.val_split = self.split_val(full_train)
        if self.cfg.preprocess == "gcn_zca":  # fitted on the training split only
            from nin_lightning.data import preprocess

            self.preprocessor = preprocess.build(self.cfg, self.train_split.images)

    def use_plan(self, device_resident: bool, static_shapes: bool) -> None:
        """The run's SpeedPlan: splits on the device; one batch shape per mode for a compiled model."""
        self.device_resident, self.static_shapes = device_resident, static_shapes

    def nbytes(self) -> int:
        """Bytes of the loaded splits (uint8 images and labels): what `device_resident=auto` must fit."""
        splits = [s for s in (self.train_split, self.val_split, self.test_split) if s is not None]
        return sum(s.images.nbytes + s.labels.nbytes for s in splits)

    def _loader(self, split: Split | None, batch_size: int, shuffle: bool, stage: str = "train"
                ) -> DataLoader | DeviceBatches:
        if split is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        trainer = self.trainer
        ddp = (trainer.distributed_sampler_kwargs if trainer is not None else None) or {}
        world, rank = ddp.get("num_replicas", 1), ddp.get("rank", 0)
        sampler = None
        if not shuffle and world > 1 and len(split) > 0:
            # this rank's unpadded shard of an evaluation set (Lightning's sampler pads with repeats); safe though
            # shards differ by one image: evaluation logs epoch-level values, synced at the epoch's end
            if len(split) < world:
                fix = "use fewer devices" + (" or a larger dataset.val_size" if stage == "validation" else "")
                raise UserError(f"the {stage} set has {len(split)} images for {world} DDP ranks, which "
                                f"need one each at least; {fix}")
            sampler = UnrepeatedDistributedSampler(range(len(split)), shuffle=False, **ddp)
        if self.device_resident:
            return self._device_batches(split, batch_size, shuffle, stage, rank, world)
        return DataLoader(split, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                          collate_fn=_as_batch, num_workers=self.cfg.num_workers,
                          persistent_workers=self.cfg.num_workers > 0,
                          drop_last=shuffle and self.static_shapes and len(split) >= batch_size)  # one shape

    def _device_batches(self, split: Split, batch_size: int, shuffle: bool, stage: str, rank: int, world: int
                        ) -> DeviceBatches:
        """The split on the trainer's device (copied there once), served by DeviceBatches (data/resident.py)."""
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        key = (stage, device)
        if key not in self._resident:
            self._resident[key] = Split(split.images.to(device), split.labels.to(device))
        on_device = self._resident[key]
        progress: dict[str, Callable[[], int]] = {}
        if shuffle and trainer is not None:  # training: the epoch, and the batches of it already trained (a resume)
            loop = trainer.fit_loop
            progress = {"epoch": lambda: loop.epoch_progress.current.processed,
                        "position": lambda: loop.epoch_loop.batch_progress.current.ready}
        return DeviceBatches(on_device.images, on_device.labels, batch_size, shuffle=shuffle, seed=_run_seed(),
                             rank=rank, world=world, **progress)

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self.train_split, self.cfg.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self.val_split, self.cfg.eval_batch_size, shuffle=False, stage="validation")

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self.test_split, self.cfg.eval_batch_size, shuffle=False, stage="test")

    def augment_generator(self, device: torch.device) -> torch.Generator | None:
        """None (the global RNG, checkpointed) on rank 0; on rank r, keyed by (seed, r, batch): exact on resume."""
        trainer = self.trainer
        if trainer is None or trainer.global_rank == 0:
            return None
        batch = trainer.fit_loop.total_batch_idx + 1  # Lightning counts the batch after this hook
        key = derived_seed(_run_seed(), trainer.global_rank, batch)
        if self._augment_generator is None or self._augment_generator.device != device:
            self._augment_generator = torch.Generator(device=device)
        return self._augment_generator.manual_seed(key)

    def transform_batch(self, images: torch.Tensor, training: bool, generator: torch.Generator | None = None
                        ) -> torch.Tensor:
        """A uint8 batch on its device -> the model's float input (augmented while training; docs/data.md)."""
        cfg = self.cfg
        if self.preprocessor is not None:
            images = self.preprocessor(images)
        if training:
            images = augment.random_crop_flip(images, cfg.crop_padding, cfg.padding_mode, cfg.flip, generator)
        if self.preprocessor is None:
            images = self.normalizer(images)
        if training and cfg.cutout:
            images = augment.cutout(images, cfg.cutout, generator)
        return images

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalize (or preprocess) on the device; augment only while training, per rank."""
        images, labels = batch
        if self.trainer is not None and self.trainer.training:
            return self.transform_batch(images, True, self.augment_generator(images.device)), labels
        return self.eval_batch(images), labels

    def eval_batch(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 evaluation batch -> the model's input, padded to `eval_batch_size` for a compiled model."""
        if self.static_shapes:
            images = pad_batch(images, self.cfg.eval_batch_size)
        return self.transform_batch(images, training=False)
