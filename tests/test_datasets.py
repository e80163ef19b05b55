"""MNIST, CIFAR-10/100 and SVHN DataModules over tiny files in torchvision's exact on-disk formats."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from nin_lightning.config import DatasetConfig, JobContext, register_configs, validate
from nin_lightning.data import augment, build_datamodule, preprocess
from nin_lightning.data.base import NiNDataModule
from nin_lightning.errors import UserError
from tests import fake_data as fd
from tests.conftest import cli_env

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
WRITERS = {"cifar10": fd.write_cifar10, "cifar100": fd.write_cifar100, "svhn": fd.write_svhn}


@pytest.fixture(autouse=True)
def one_thread():
    """Two OpenMP threads on a 2-core box that others share are far slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def compose_cfg(overrides: list[str]):
    register_configs()
    with initialize_config_dir(version_base=None, config_dir=str(CONF)):
        return compose("train", overrides=overrides)


def dataset_cfg(name: str, root: Path, *overrides: str) -> DatasetConfig:
    cfg = compose_cfg([f"dataset={name}", f"dataset.root={root}", *overrides])
    return validate(cfg).dataset


def datamodule(name: str, root: Path, *overrides: str, setup: bool = True) -> NiNDataModule:
    dm = build_datamodule(dataset_cfg(name, root, *overrides))
    if setup:
        dm.setup("fit")
    return dm


def user_error(fn) -> str:
    """The message of the UserError `fn()` raises, checked to be one line."""
    with pytest.raises(UserError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, message
    return message


def image_keys(images: torch.Tensor) -> list[bytes]:
    return [bytes(img.numpy().tobytes()) for img in images]


# --- each format loads, pixel for pixel --------------------------------------------------------------

@pytest.fixture
def all_fakes(tmp_path, monkeypatch):
    written = {
        "mnist": fd.write_mnist(tmp_path, n_train=120, n_test=40),
        "cifar10": fd.write_cifar10(tmp_path, per_batch=24, n_test=40),
        "cifar100": fd.write_cifar100(tmp_path, n_train=200, n_test=100),
        "svhn": fd.write_svhn(tmp_path, n_train=120, n_test=40, n_extra=90),
    }
    fd.trust_fake_md5(monkeypatch, tmp_path)
    return tmp_path, written


@pytest.mark.parametrize(("name", "shape", "classes"), [
    ("mnist", (1, 28, 28), 10), ("cifar10", (3, 32, 32), 10), ("cifar100", (3, 32, 32), 100),
    ("svhn", (3, 32, 32), 10),
])
def test_loads_shapes_dtypes_labels(all_fakes, name, shape, classes):
    root, written = all_fakes
    dm = datamodule(name, root, "dataset.val_size=20")
    train_images, train_labels = written[name]["train"]
    test_images, test_labels = written[name]["test"]
    for split in (dm.train_split, dm.val_split, dm.test_split):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert tuple(split.images.shape[1:]) == shape
        assert split.images.is_contiguous()
    assert (len(dm.train_split), len(dm.val_split), len(dm.test_split)) == (len(train_labels) - 20, 20,
                                                                           len(test_labels))
    # the official test split, in order, pixel for pixel (NCHW from CIFAR's channel-major rows,
    # from SVHN's (32, 32, 3, N) X and from MNIST's idx bytes) with the right labels
    np.testing.assert_array_equal(dm.test_split.images.numpy(), test_images)
    np.testing.assert_array_equal(dm.test_split.labels.numpy(), test_labels)
    # train + val together are exactly the training file, each image with its own label
    by_image = dict(zip(image_keys(torch.from_numpy(train_images)), train_labels.tolist(), strict=True))
    seen = []
    for split in (dm.train_split, dm.val_split):
        for key, label in zip(image_keys(split.images), split.labels.tolist(), strict=True):
            assert by_image[key] == label
            seen.append(key)
    assert sorted(seen) == sorted(by_image)
    assert int(dm.train_split.labels.max()) < classes


def test_svhn_label_10_is_digit_0(tmp_path, monkeypatch):
    written = fd.write_svhn(tmp_path, n_train=60, n_test=30)
    from scipy.io import loadmat

    y = loadmat(tmp_path / "test_32x32.mat")["y"].ravel()
    assert 10 in y and 0 not in y  # the file uses SVHN's convention
    fd.trust_fake_md5(monkeypatch, tmp_path)
    dm = datamodule("svhn", tmp_path, "dataset.val_size=10")
    labels = dm.test_split.labels.numpy()
    np.testing.assert_array_equal(labels, np.where(y == 10, 0, y))
    np.testing.assert_array_equal(labels, written["test"][1])  # the digit each image was drawn as
    assert labels.min() == 0 and labels.max() == 9


def test_cifar100_uses_fine_labels(tmp_path, monkeypatch):
    written = fd.write_cifar100(tmp_path, n_train=200, n_test=100)
    fd.trust_fake_md5(monkeypatch, tmp_path)
    dm = datamodule("cifar100", tmp_path, "dataset.val_size=20")
    np.testing.assert_array_equal(dm.test_split.labels.numpy(), written["test"][1])
    assert int(dm.test_split.labels.max()) > 19  # not the 20 coarse labels


def test_mnist_reads_gz_only(tmp_path, monkeypatch):
    written = fd.write_mnist(tmp_path, n_train=60, n_test=20, gz=True)
    raw = tmp_path / "MNIST" / "raw"
    assert not (raw / "train-images-idx3-ubyte").exists()
    fd.trust_fake_md5(monkeypatch, tmp_path)  # the .gz files are MD5-checked too
    dm = datamodule("mnist", tmp_path, "dataset.val_size=10")
    np.testing.assert_array_equal(dm.test_split.images.numpy(), written["test"][0])
    assert (raw / "train-images-idx3-ubyte").is_file()  # decompressed next to it, as torchvision would


# --- splits --------------------------------------------------------------------------------------------

def test_split_sizes_and_seeds(tmp_path):
    fd.write_mnist(tmp_path, n_train=200, n_test=20)

    def val(seed: int) -> list[bytes]:
        return image_keys(datamodule("mnist", tmp_path, "dataset.val_size=50", f"dataset.split_seed={seed}")
                          .val_split.images)

    assert val(0) == val(0)
    assert set(val(0)) != set(val(1))
    dm = datamodule("mnist", tmp_path, "dataset.val_size=50")
    assert (len(dm.train_split), len(dm.val_split)) == (150, 50)
    assert not set(image_keys(dm.train_split.images)) & set(image_keys(dm.val_split.images))
    message = user_error(lambda: datamodule("mnist", tmp_path, "dataset.val_size=200"))
    assert "dataset.val_size" in message



def test_fast_mnist_on_a_smaller_mnist_trains_on_the_larger_part(tmp_path):
    """The issue's trial: experiment=fast_mnist on an 8,000-image MNIST gave 3,000 train / 5,000 val images
    without a word (val_size: 5000). Now a tenth validates; a split that leaves validation the larger part
    says so in one line."""
    fd.write_mnist(tmp_path, n_train=8000, n_test=20)
    conf = validate(compose_cfg(["experiment=fast_mnist", f"dataset.root={tmp_path}"]))
    dm = build_datamodule(conf.dataset)
    dm.setup("fit")
    assert (len(dm.train_split), len(dm.val_split)) == (7200, 800)
    assert dm.split_note() is None
    lopsided = datamodule("mnist", tmp_path, "dataset.val_size=0.6")
    assert (len(lopsided.train_split), len(lopsided.val_split)) == (3200, 4800)
    note = lopsided.split_note()
    assert note is not None and "\n" not in note
    assert "dataset.val_size=0.6" in note and "4,800" in note and "3,200" in note and "smaller" in note, note


def test_a_fraction_is_the_count_it_rounds_to(tmp_path):
    """digits' preset 0.125 holds out the same 180 images as the count 180 did (runs keep their splits)."""
    fraction, count = (datamodule("digits", tmp_path, f"dataset.val_size={v}") for v in ("0.125", "180"))
    assert len(fraction.val_split) == 180
    assert image_keys(fraction.val_split.images) == image_keys(count.val_split.images)
    assert image_keys(fraction.train_split.images) == image_keys(count.train_split.images)


def _svhn_sources(written: dict) -> dict[bytes, str]:
    return {key: part for part in ("train", "extra")
            for key in image_keys(torch.from_numpy(written[part][0]))}


def test_svhn_train_plus_extra_paper_split(tmp_path, monkeypatch):
    written = fd.write_svhn(tmp_path, n_train=150, n_test=20, n_extra=90)
    fd.trust_fake_md5(monkeypatch, tmp_path)
    source = _svhn_sources(written)

    def split(seed: int) -> NiNDataModule:
        return datamodule("svhn", tmp_path, "dataset.split=train+extra", "dataset.val_size=60",
                          f"dataset.split_seed={seed}")

    dm = split(0)
    assert (len(dm.train_split), len(dm.val_split)) == (150 + 90 - 60, 60)
    # val_size=60 is the paper's 6000 scaled down: per class 4 from train and 2 from extra
    counts = {}
    for key, label in zip(image_keys(dm.val_split.images), dm.val_split.labels.tolist(), strict=True):
        counts[(source[key], label)] = counts.get((source[key], label), 0) + 1
    assert counts == {**{("train", c): 4 for c in range(10)}, **{("extra", c): 2 for c in range(10)}}
    # the rest of train + extra trains; nothing is lost or shared
    train_keys, val_keys = image_keys(dm.train_split.images), image_keys(dm.val_split.images)
    assert not set(train_keys) & set(val_keys)
    assert sorted(train_keys + val_keys) == sorted(source)
    assert image_keys(split(0).val_split.images) == val_keys
    assert set(image_keys(split(1).val_split.images)) != set(val_keys)
    message = user_error(lambda: datamodule("svhn", tmp_path, "dataset.split=train+extra",
                                            "dataset.val_size=50"))
    assert "dataset.val_size=50" in message and "6000" in message
    # a fraction of train + extra, rounded to whole units of 30: 0.3 x 240 = 72 -> 60, the split above
    assert image_keys(datamodule("svhn", tmp_path, "dataset.split=train+extra", "dataset.val_size=0.3")
                      .val_split.images) == val_keys


def test_svhn_paper_split_counts_at_full_size():
    """val_size=6000 (conf/dataset/svhn.yaml) -> 400 per class from train + 200 per class from extra."""
    from nin_lightning.data.base import Split
    from nin_lightning.data.svhn import SVHNDataModule

    cfg = DatasetConfig(name="svhn", num_classes=10, in_channels=3, image_size=32, preset="svhn",
                        mean=[0.5] * 3, std=[0.2] * 3, split="train+extra", val_size=6000)
    n_train, n_extra = 5000, 3000
    labels = torch.arange(n_train + n_extra) % 10
    dm = SVHNDataModule(cfg)
    dm.official_train_size = n_train
    full = Split(torch.zeros(n_train + n_extra, 1, 1, 1, dtype=torch.uint8), labels)
    full.images.view(-1)[:] = (torch.arange(n_train + n_extra) >= n_train).to(torch.uint8)  # 1 = extra
    train, val = dm.split_val(full)
    assert len(val) == 6000 and len(train) == n_train + n_extra - 6000
    from_extra = val.images.view(-1).bool()
    for c in range(10):
        assert int(((val.labels == c) & ~from_extra).sum()) == 400
        assert int(((val.labels == c) & from_extra).sum()) == 200


# --- augmentation and evaluation ----------------------------------------------------------------------

def coordinate_images(n: int, size: int = 32) -> torch.Tensor:
    """Channel 0 = row, channel 1 = column, channel 2 = 255: crops and mirrors can be read back."""
    rows = torch.arange(size).view(size, 1).expand(size, size)
    img = torch.stack([rows, rows.T, torch.full((size, size), 255)]).to(torch.uint8)
    return img.expand(n, 3, size, size).contiguous()


def test_crop_offsets_and_flips_are_per_sample():
    x = coordinate_images(256)
    torch.manual_seed(0)
    out = augment.random_crop_flip(x, padding=4, mode="zero", flip=True)
    dy = out[:, 0, 16, 16].long() - 16
    col = out[:, 1, 16, :].long()
    mirrored = col[:, 15] > col[:, 16]  # the centre is never padding
    dx = torch.where(mirrored, col[:, 15], col[:, 16]) - 16  # the column that lands at 16 (or at 15 mirrored)
    assert dy.abs().max() <= 4 and dx.abs().max() <= 4
    assert len(set(zip(dy.tolist(), dx.tolist(), strict=True))) > 40  # 81 possible offsets, 256 samples
    assert 0.3 < mirrored.float().mean() < 0.7
    # zero padding shows as black where the crop leaves the image
    assert bool(((out[:, 2] == 0).flatten(1).any(1) == ((dy != 0) | (dx != 0))).all())
    reflect = augment.random_crop_flip(x, padding=4, mode="reflect", flip=False)
    assert bool((reflect[:, 2] == 255).all())  # reflect padding never adds black


def test_train_batches_augmented_eval_batches_not(all_fakes):
    root, _ = all_fakes
    dm = datamodule("cifar10", root, "dataset.val_size=20", "dataset.cutout=8")
    images, _ = next(iter(dm.train_dataloader()))
    same = images[:1].expand(16, -1, -1, -1).contiguous()
    out = dm.transform_batch(same, training=True)
    assert out.dtype == torch.float32 and out.shape == same.shape
    assert len({o.numpy().tobytes() for o in out}) == 16  # every sample its own crop/flip/cutout
    plain = augment.normalize(same, dm.cfg.mean, dm.cfg.std)
    torch.testing.assert_close(dm.transform_batch(same, training=False), plain)


def test_evaluation_is_deterministic(all_fakes):
    root, _ = all_fakes
    dm = datamodule("cifar10", root, "dataset.val_size=40", "dataset.eval_batch_size=16")

    def one_pass() -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [(dm.transform_batch(x, training=False), y) for x, y in dm.val_dataloader()]
        xs, ys = zip(*pairs, strict=True)
        return torch.cat(xs), torch.cat(ys)

    (x1, y1), (x2, y2) = one_pass(), one_pass()
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(y1, dm.val_split.labels)  # in order, no shuffling


@pytest.mark.parametrize("name", ["mnist", "svhn"])
def test_digits_never_flip(all_fakes, name):
    root, _ = all_fakes
    dm = datamodule(name, root, "dataset.val_size=20", "dataset.crop_padding=2")
    assert dm.cfg.flip is False
    size = dm.cfg.image_size
    x = coordinate_images(512, size)[:, : dm.cfg.in_channels]
    x[:, 0] = torch.arange(size).view(1, size)  # channel 0 = column index
    std = torch.tensor(dm.cfg.std).view(1, -1, 1, 1)
    mean = torch.tensor(dm.cfg.mean).view(1, -1, 1, 1)
    back = ((dm.transform_batch(x, training=True) * std + mean) * 255).round()[:, 0, size // 2]
    inside = back[:, 2:-2]
    assert bool((inside[:, 1:] > inside[:, :-1]).all())  # columns always increase: never mirrored
    message = user_error(lambda: datamodule(name, root, "dataset.flip=true", setup=False))
    assert "dataset.flip=false" in message


# --- errors ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
    ("cifar10", "cifar-10-batches-py"),
    ("cifar100", "cifar-100-python"),
    ("svhn", "train_32x32.mat"),
])
def test_missing_data_names_path_and_override(tmp_path, name, expected):
    message = user_error(lambda: datamodule(name, tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere" / expected) in message
    assert "dataset.download=true" in message and "dataset.root=" in message


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "svhn"])
def test_download_without_network_says_so(tmp_path, monkeypatch, name):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    dm = datamodule(name, tmp_path, "dataset.download=true", setup=False)
    message = user_error(dm.prepare_data)
    assert "no network" in message and "dataset.download=false" in message


def _truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize(("damage", "culprit", "why"), [
    ("truncate_images", "train-images-idx3-ubyte", "bytes, expected"),
    ("bad_magic", "t10k-labels-idx1-ubyte", "magic number"),
    ("label_count", "train-labels-idx1-ubyte", "labels for the"),
    ("bad_gz", "t10k-images-idx3-ubyte.gz", "gzip"),
])
def test_mnist_corrupted_file_is_named(tmp_path, monkeypatch, damage, culprit, why):
    fd.write_mnist(tmp_path, n_train=60, n_test=20, gz=damage == "bad_gz")
    fd.trust_fake_md5(monkeypatch, tmp_path)  # the intact .gz files pass their MD5 check
    raw = tmp_path / "MNIST" / "raw"
    if damage == "truncate_images":
        _truncate(raw / culprit, 5000)
    elif damage == "bad_magic":
        data = bytearray((raw / culprit).read_bytes())
        data[3] = 0x03
        (raw / culprit).write_bytes(bytes(data))
    elif damage == "label_count":
        (raw / culprit).write_bytes(fd.idx_labels(np.zeros(59, dtype=np.uint8)))
    else:
        (raw / culprit).write_bytes(gzip.compress((raw / culprit).read_bytes())[:50])
    message = user_error(lambda: datamodule("mnist", tmp_path, "dataset.val_size=10"))
    assert str(raw / culprit) in message and why in message


@pytest.mark.parametrize(("name", "culprit"), [
    ("cifar10", "cifar-10-batches-py/data_batch_3"),
    ("cifar10", "cifar-10-batches-py/batches.meta"),
    ("cifar100", "cifar-100-python/test"),
    ("svhn", "test_32x32.mat"),
])
def test_md5_mismatch_names_the_file(tmp_path, monkeypatch, name, culprit):
    WRITERS[name](tmp_path)
    fd.trust_fake_md5(monkeypatch, tmp_path)  # the fake files pass torchvision's real check ...
    _truncate(tmp_path / culprit)  # ... until one is truncated
    message = user_error(lambda: datamodule(name, tmp_path, "dataset.val_size=10"))
    assert str(tmp_path / culprit) in message and "MD5" in message


@pytest.mark.parametrize(("corrupt", "split"), [(("train", "test"), "train"), (("train", "extra"), "train+extra"),
                                                (("train", "extra", "test"), "train+extra")])
def test_svhn_names_the_file_torchvision_refused_when_several_fail_their_md5(tmp_path, monkeypatch, corrupt, split):
    """The first file read (train) is the one named, not the first of all to fail their MD5 (found by a
    differential test of the lean-core refactor: an intermediate commit named test or extra)."""
    fd.write_svhn(tmp_path, n_train=60, n_test=30, n_extra=60)
    fd.trust_fake_md5(monkeypatch, tmp_path)
    for part in corrupt:
        with open(tmp_path / f"{part}_32x32.mat", "ab") as f:
            f.write(b"x\n")
    message = user_error(lambda: datamodule("svhn", tmp_path, f"dataset.split={split}", "dataset.val_size=30"))
    assert str(tmp_path / "train_32x32.mat") in message and "MD5" in message


def test_cifar_missing_one_file_is_named(tmp_path, monkeypatch):
    fd.write_cifar10(tmp_path)
    fd.trust_fake_md5(monkeypatch, tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    message = user_error(lambda: datamodule("cifar10", tmp_path, "dataset.val_size=10"))
    assert str(tmp_path / "cifar-10-batches-py" / "test_batch") in message and "incomplete" in message


def test_the_real_md5_check_rejects_fake_files(tmp_path):
    """Without the test-only patch, torchvision's MD5 check (kept in the product) refuses fake CIFAR."""
    fd.write_cifar10(tmp_path)
    message = user_error(lambda: datamodule("cifar10", tmp_path, "dataset.val_size=10"))
    assert "cifar-10-batches-py/data_batch_1" in message and "MD5" in message


# --- DDP: one shard per rank ----------------------------------------------------------------------------

@pytest.fixture
def as_rank(monkeypatch):
    """as_rank(r, world) -> a Trainer that takes itself for DDP rank r of `world` (no process group)."""
    import lightning as L
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    # set_world_ranks() sets the process-wide rank_zero_only.rank; restore it afterwards
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")

    def make(rank: int, world: int = 2) -> L.Trainer:
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        trainer = L.Trainer(accelerator="cpu", devices=world, strategy="ddp", logger=False,
                            enable_checkpointing=False, enable_progress_bar=False)
        trainer.strategy.set_world_ranks()
        assert trainer.distributed_sampler_kwargs == {"num_replicas": world, "rank": rank}
        return trainer

    return make


def test_ddp_ranks_get_disjoint_shards(all_fakes, as_rank):
    """Lightning's own sampler injection (DDP, 2 ranks): disjoint shards that cover the training set."""
    from lightning.pytorch.trainer.states import RunningStage
    from torch.utils.data import DistributedSampler

    root, _ = all_fakes
    dm = datamodule("cifar10", root, "dataset.val_size=20", "dataset.batch_size=8")  # 100 training images
    index_of = {key: i for i, key in enumerate(image_keys(dm.train_split.images))}
    assert len(index_of) == len(dm.train_split)
    for epoch in (0, 1):
        shards = []
        for rank in (0, 1):
            trainer = as_rank(rank)
            loader = trainer._data_connector._prepare_dataloader(dm.train_dataloader(), shuffle=True,
                                                                 mode=RunningStage.TRAINING)
            assert isinstance(loader.sampler, DistributedSampler) and loader.sampler.shuffle
            loader.sampler.set_epoch(epoch)
            seen = []
            for images, _labels in loader:  # whole batches through __getitems__
                assert images.shape[0] <= 8 and images.dtype == torch.uint8
                seen += [index_of[k] for k in image_keys(images)]
            shards.append(seen)
        assert len(shards[0]) == len(shards[1]) == 50
        assert not set(shards[0]) & set(shards[1])  # no duplicates across ranks
        assert sorted(shards[0] + shards[1]) == list(range(100))  # full coverage (100 = 2 x 50: no padding)
        assert shards[0] != sorted(shards[0])  # shuffled
        if epoch == 0:
            first_epoch = shards[0]
        else:
            assert shards[0] != first_epoch  # reshuffled per epoch


def test_ddp_eval_shards_hold_each_image_once(tmp_path, as_rank):
    """Odd-sized val/test sets on 2 ranks: unpadded shards (21 + 20 images), each image exactly once.

    Lightning's injected DistributedSampler would pad to 2 x 21 with a repeat; it keeps ours instead."""
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
    from lightning.pytorch.trainer.states import RunningStage
    from torch.utils.data import SequentialSampler

    fd.write_mnist(tmp_path, n_train=100, n_test=41)
    dm = datamodule("mnist", tmp_path, "dataset.val_size=21", "dataset.eval_batch_size=5")
    for split, loader_of, mode in ((dm.val_split, dm.val_dataloader, RunningStage.VALIDATING),
                                   (dm.test_split, dm.test_dataloader, RunningStage.TESTING)):
        index_of = {key: i for i, key in enumerate(image_keys(split.images))}
        shards = []
        for rank in (0, 1):
            dm.trainer = as_rank(rank)
            loader = loader_of()
            assert dm.trainer._data_connector._prepare_dataloader(loader, shuffle=False, mode=mode) is loader
            assert isinstance(loader.sampler, UnrepeatedDistributedSampler)
            shards.append([index_of[k] for images, _ in loader for k in image_keys(images)])
        n = len(split)
        assert [len(s) for s in shards] == [n - n // 2, n // 2]
        assert sorted(shards[0] + shards[1]) == list(range(n))
    dm.trainer = None
    assert isinstance(dm.test_dataloader().sampler, SequentialSampler)  # one process: as before
    dm.trainer = as_rank(0, world=50)
    assert "41 images for 50 DDP ranks" in user_error(dm.test_dataloader)


def test_ddp_accuracy_is_the_whole_sets(tmp_path, monkeypatch):
    """2 gloo ranks, odd-sized val/test sets whose shards take 3 vs 2 and 5 vs 4 batches: no deadlock, and
    val/acc and test/acc equal one process's accuracy over each set on the same weights (BatchNorm
    included: DDP syncs its buffers on the first evaluation forward, which both ranks run).

    Forked ranks (no re-import) take well under a second; spawned ones ~40 s on 2 shared cores."""
    from datetime import timedelta

    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy

    from nin_lightning.module import NiNClassifier

    for key in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    fd.write_mnist(tmp_path, n_train=64, n_test=41)
    conf = validate(compose_cfg(["dataset=mnist", f"dataset.root={tmp_path}", "dataset.val_size=21",
                                 "dataset.eval_batch_size=5", "dataset.batch_size=16", "optimizer=adamw",
                                 "scheduler=constant"]))
    dm = build_datamodule(conf.dataset)
    dm.setup("fit")
    torch.manual_seed(0)
    model = NiNClassifier(10, 1, "mnist", width=0.1, optimizer={"name": "adamw"}, scheduler={"name": "constant"})
    ddp = DDPStrategy(start_method="fork", timeout=timedelta(seconds=60))  # a deadlock fails, not hangs

    class ThreadPoolOnce(L.Callback):
        """In each forked rank, torch's thread pool (which the fork left invalid if this worker used it) is
        rebuilt here, on one thread: else the autograd thread and the main thread may rebuild it at once, and
        torch aborts ("pool INTERNAL ASSERT FAILED ... Invalid thread pool!", seen once under load)."""

        def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
            torch.set_num_threads(torch.get_num_threads())

    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=ddp, max_epochs=1, limit_train_batches=2,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        callbacks=[ThreadPoolOnce()], enable_model_summary=False,
                        default_root_dir=tmp_path)  # (its weights hand-over file)
    trainer.fit(model, datamodule=dm)  # the forked ranks train; rank 0's weights come back to this process
    val_acc = float(trainer.callback_metrics["val/acc"])
    [results] = trainer.test(model, datamodule=dm, verbose=False)

    def accuracy(split) -> float:
        model.eval()
        with torch.no_grad():
            logits = model.evaluate(dm.transform_batch(split.images, training=False))
        return float((logits.argmax(1) == split.labels).double().mean())

    print(f"2 ranks: val/acc={val_acc:.4f} test/acc={results['test/acc']:.4f}")
    assert val_acc == pytest.approx(accuracy(dm.val_split), abs=1e-6)  # not over 22 images (one repeat)
    assert results["test/acc"] == pytest.approx(accuracy(dm.test_split), abs=1e-6)  # not over 42


def test_ddp_ranks_augment_differently(all_fakes, as_rank):
    """Seeded alike, each rank still draws its own crops/flips/cutout: rank 0 as a single process does
    (the global RNG), ranks > 0 from (seed, rank, batch index), so reproducibly and without state."""
    root, _ = all_fakes
    dm = datamodule("cifar10", root, "dataset.val_size=20", "dataset.cutout=8")
    x, y = next(iter(dm.train_dataloader()))

    def augmented(rank: int, world: int = 3, batch: int = 0) -> torch.Tensor:
        dm.trainer = as_rank(rank, world)
        dm.trainer.training = True
        dm.trainer.fit_loop.epoch_loop.batch_progress.total.ready = batch
        torch.manual_seed(0)
        images, labels = dm.on_after_batch_transfer((x, y), 0)
        assert labels is y
        return images

    torch.manual_seed(0)
    single = dm.transform_batch(x, training=True)
    rank0, rank1, rank2 = augmented(0), augmented(1), augmented(2)
    assert torch.equal(rank0, single)  # rank 0 (and one process) unchanged
    assert not torch.equal(rank1, rank0) and not torch.equal(rank2, rank1) and not torch.equal(rank2, rank0)
    assert torch.equal(augmented(1), rank1)  # reproducible, whatever the global RNG holds
    assert not torch.equal(augmented(1, batch=1), rank1)  # a new draw per batch
    dm.trainer.training = False
    torch.testing.assert_close(dm.on_after_batch_transfer((x, y), 0)[0], augment.normalize(x, dm.cfg.mean, dm.cfg.std))


# --- downloads: local rank 0 of each node, the others wait for its files -------------------------------

def test_local_rank_from_environment(monkeypatch):
    from nin_lightning.cluster.slurm import local_rank

    for key in ("LOCAL_RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(key, raising=False)
    assert local_rank() == 0 and local_rank(default=3) == 3
    monkeypatch.setenv("SLURM_LOCALID", "2")
    assert local_rank() == 2
    monkeypatch.setenv("LOCAL_RANK", "1")  # Lightning's ranks inside one Slurm task
    assert local_rank() == 1


def test_other_local_ranks_wait_for_the_download(tmp_path, monkeypatch):
    """Local rank 1 starts with no data (as under srun) and waits, through half-written files, until local
    rank 0's download is complete; it never downloads itself, and leaves no files of its own."""
    import threading
    import time

    from nin_lightning.data import base
    from nin_lightning.run import load_data_early

    monkeypatch.setattr(base, "DOWNLOAD_POLL_S", 0.01)
    monkeypatch.setattr(base, "DOWNLOAD_WAIT_S", 60.0)
    rank0 = datamodule("mnist", tmp_path, "dataset.download=true", "dataset.val_size=10", setup=False)
    rank1 = datamodule("mnist", tmp_path, "dataset.download=true", "dataset.val_size=10", setup=False)
    polls = []
    file_problem = rank1.file_problem

    def poll() -> UserError | None:
        polls.append(file_problem())
        return polls[-1]

    monkeypatch.setattr(rank1, "file_problem", poll)
    monkeypatch.setattr(rank1, "download", lambda: pytest.fail("local rank 1 downloaded"))
    monkeypatch.setenv("LOCAL_RANK", "1")
    errors = []
    waiting = threading.Thread(target=_record_errors, args=(errors, load_data_early, rank1))

    def looked(times: int = 2) -> None:  # until local rank 1 has looked at the files `times` more
        target = len(polls) + times
        while len(polls) < target and waiting.is_alive():
            time.sleep(0.01)

    def download() -> None:  # local rank 0: one file at a time, the last one in two halves
        written.update(fd.write_mnist(tmp_path / "staging", n_train=60, n_test=20))
        staging, raw = tmp_path / "staging" / "MNIST" / "raw", tmp_path / "MNIST" / "raw"
        looked()
        raw.mkdir(parents=True)
        names = sorted(p.name for p in staging.iterdir())
        for name in names:
            data = (staging / name).read_bytes()
            (raw / name).write_bytes(data[: len(data) // 2] if name == names[-1] else data)
            looked()
        (raw / names[-1]).write_bytes((staging / names[-1]).read_bytes())

    written = {}
    monkeypatch.setattr(rank0, "download", download)
    waiting.start()
    rank0.prepare_data()
    waiting.join(30)
    assert not waiting.is_alive() and not errors, errors
    assert polls[0] is not None and "not found" in str(polls[0])  # it started before the data existed
    assert any("corrupted" in str(p) for p in polls)  # the half-written file did not fool it
    np.testing.assert_array_equal(rank1.test_split.images.numpy(), written["test"][0])
    assert sorted(p.name for p in (tmp_path / "MNIST" / "raw").iterdir()) == sorted(fd.MNIST_FILES["train"]
                                                                                  + fd.MNIST_FILES["test"])


@pytest.mark.parametrize(("name", "culprit"), [
    ("mnist", "MNIST/raw/t10k-labels-idx1-ubyte"), ("cifar10", "cifar-10-batches-py/data_batch_2"),
    ("cifar100", "cifar-100-python/train"), ("svhn", "extra_32x32.mat"),
])
def test_file_problem_is_what_load_would_refuse(all_fakes, name, culprit):
    """What a waiting rank polls: None once complete; a half-written or absent file is named."""
    root, _ = all_fakes
    dm = datamodule(name, root, *(["dataset.split=train+extra"] if name == "svhn" else []), setup=False)
    assert dm.file_problem() is None
    data = (root / culprit).read_bytes()
    (root / culprit).write_bytes(data[: len(data) // 2])
    assert f"{root / culprit} is corrupted" in str(dm.file_problem())
    (root / culprit).unlink()
    assert f"{root / culprit} is missing" in str(dm.file_problem())


def _record_errors(errors: list, fn, *args) -> None:
    try:
        fn(*args)
    except BaseException as exc:
        errors.append(exc)


def test_waiting_rank_gives_up_in_one_line(tmp_path, monkeypatch):
    import time

    from nin_lightning.data import base
    from nin_lightning.run import load_data_early

    monkeypatch.setattr(base, "DOWNLOAD_POLL_S", 0.01)
    monkeypatch.setattr(base, "DOWNLOAD_WAIT_S", 0.2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    dm = datamodule("cifar10", tmp_path, "dataset.download=true", setup=False)
    message = user_error(lambda: load_data_early(dm))
    assert "waited 0.2 s for local rank 0 to download cifar10" in message
    assert f"not found: expected {tmp_path / 'cifar-10-batches-py'}" in message
    # without dataset.download nobody downloads: no waiting, the usual error at once
    dm = datamodule("cifar10", tmp_path, setup=False)
    started = time.monotonic()
    assert "dataset.download=true" in user_error(lambda: load_data_early(dm))
    assert time.monotonic() - started < 0.2


# --- GCN + ZCA ------------------------------------------------------------------------------------------

def test_zca_whitens_and_is_symmetric():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(48, 48, generator=g)
    raw = (torch.randn(4000, 48, generator=g) @ basis * 20 + 128).clamp(0, 255).to(torch.uint8)
    mean, whiten = preprocess.fit_zca(raw.view(-1, 3, 4, 4))
    torch.testing.assert_close(whiten, whiten.T)
    out = (preprocess.gcn(raw) - mean) @ whiten
    eig = torch.linalg.eigvalsh(torch.cov(out.T.double()))
    assert eig.max() < 1.0 + 1e-3 and eig[-40:].min() > 0.5  # whitened up to the filter bias


def test_gcn_zca_fitted_on_train_only_and_cached(all_fakes, monkeypatch):
    """On MNIST-shaped data (784 dims): a 3072-dim eigendecomposition takes ~10 s on this CPU."""
    root, _ = all_fakes
    dm = datamodule("mnist", root, "dataset.val_size=20", "dataset.preprocess=gcn_zca", "dataset.crop_padding=2")
    cached = list((root / ".nin_cache").glob("mnist-gcn_zca-*.pt"))
    assert [p.name for p in cached] == [preprocess.cache_path(dm.cfg, dm.train_split.images).name]
    _, whiten = preprocess.fit_zca(dm.train_split.images)
    torch.testing.assert_close(dm.preprocessor.whiten, whiten)  # the training split, nothing else

    # a second run loads the cache (fitting would fail here); another split seed is another fit
    def no_fit(images):
        raise AssertionError("refitted despite the cache")

    with monkeypatch.context() as m:
        m.setattr(preprocess, "fit_zca", no_fit)
        again = datamodule("mnist", root, "dataset.val_size=20", "dataset.preprocess=gcn_zca")
    torch.testing.assert_close(again.preprocessor.whiten, whiten)
    datamodule("mnist", root, "dataset.val_size=20", "dataset.preprocess=gcn_zca", "dataset.split_seed=1")
    assert len(list((root / ".nin_cache").glob("mnist-gcn_zca-*.pt"))) == 2

    # whitening replaces mean/std; evaluation = whitened images, training = whitened then augmented
    images, _ = next(iter(dm.val_dataloader()))
    evaluated = dm.transform_batch(images, training=False)
    torch.testing.assert_close(evaluated, dm.preprocessor(images))
    trained = dm.transform_batch(images, training=True)
    assert trained.shape == images.shape and not torch.equal(trained, evaluated)


# --- end to end -----------------------------------------------------------------------------------------

FAST_MODEL = ["model.width=0.25", "model.init=kaiming", "model.final_relu=false", "model.dropout=0.1",
              "optimizer=adamw", "optimizer.lr=3e-3", "scheduler=onecycle", "trainer=cpu", "logger=none",
              "trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_train_py_learns_mnist_format(tmp_path):
    """`python train.py dataset=mnist dataset.root=DIR` on raw idx files learns the fake digits."""
    fd.write_mnist(tmp_path / "data", n_train=600, n_test=200)
    run_dir = tmp_path / "run"
    env = {**cli_env(tmp_path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "train.py", "dataset=mnist", f"dataset.root={tmp_path / 'data'}",
           "dataset.val_size=100", "dataset.batch_size=16", "trainer.max_epochs=4", *FAST_MODEL,
           f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    print(f"MNIST-format run: test/acc={metrics['test/acc']:.3f} after {metrics['epochs']} epochs")
    assert metrics["test/acc"] >= 0.9, metrics


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_train_runs_on_each_format(tmp_path, monkeypatch, name):
    """run.train end to end on the CIFAR/SVHN formats (in-process: the MD5 patch applies)."""
    from nin_lightning.run import train

    WRITERS[name](tmp_path / "data")
    fd.trust_fake_md5(monkeypatch, tmp_path / "data")
    cfg = compose_cfg([f"dataset={name}", f"dataset.root={tmp_path / 'data'}", "dataset.val_size=40",
                       "dataset.batch_size=32", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                       *FAST_MODEL])
    train(cfg, JobContext(run_dir=tmp_path / "run"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and "test/acc" in metrics
