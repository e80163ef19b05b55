"""Tiny datasets in EXACTLY torchvision's on-disk formats, with learnable images.

Each class k is a sinusoidal grating of its own orientation and period (and, for colour images,
its own channel gains), drawn with a random phase, contrast and Gaussian noise per image: a
convnet learns it in a few hundred steps, and no two images are equal.

Writers return what they wrote (images as the model sees them, uint8 NCHW, and labels 0..C-1), so
tests can check the loaders pixel for pixel.

The MD5s torchvision expects are those of the real files; `trust_fake_md5` points torchvision's
tables at the fake files' MD5s, in-process and for tests and benchmarks only (the product keeps the real
check).

Here, in benchmarks/, because benchmarks write these files too (gpu_check.py, data_pipeline.py,
time_to_accuracy.py) and must not import tests; tests import them through tests/fake_data.py.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np


def patterns(n: int, channels: int, size: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (n, channels, size, size), int64 labels (n,)), balanced over the classes."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    k = labels.astype(np.float64)
    theta = np.pi * (k % 5) / 5  # 5 orientations, 36 degrees apart
    period = np.where((k // 5) % 2 == 0, 3.5, 7.0) + 0.5 * (k // 10)  # 2 periods (+ more for > 10 classes)
    phase = rng.uniform(0, 2 * np.pi, n)
    contrast = rng.uniform(60, 100, n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    proj = np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy
    wave = np.sin(2 * np.pi * proj / period[:, None, None] + phase[:, None, None])  # (n, size, size)
    ch = np.arange(channels)
    # colour images: a class-dependent tint (gains 0.7..1.0 per channel); grey images: gain 1
    gains = 0.85 + 0.15 * np.cos(2 * np.pi * (k[:, None] / num_classes + ch[None, :] / 3)) if channels > 1 \
        else np.ones((n, 1))
    img = 128 + contrast[:, None, None, None] * gains[:, :, None, None] * wave[:, None]
    img += rng.normal(0, 15, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), labels


# --- MNIST: big-endian idx files under MNIST/raw/ ---------------------------------------------------

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return struct.pack(">iiii", 2051, n, h, w) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">ii", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def write_mnist(root: Path, n_train: int = 300, n_test: int = 100, seed: int = 0, gz: bool = False,
                flat: bool = False) -> dict:
    """`<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte` (or only their `.gz`).

    `flat`: the files straight in `<root>`, as a user copies MNIST's four downloaded .gz files."""
    raw = Path(root) if flat else Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        images, labels = patterns(n, 1, 28, 10, seed + i)
        out[split] = (images, labels)
        payloads = (idx_images(images[:, 0]), idx_labels(labels))
        for name, payload in zip(MNIST_FILES[split], payloads, strict=True):
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (raw / name).write_bytes(payload)
    return out


# --- CIFAR: python pickles (protocol 2, like the originals) -----------------------------------------

def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 40, n_test: int = 100, seed: int = 0) -> dict:
    """`<root>/cifar-10-batches-py/`: data_batch_1..5, test_batch, batches.meta."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = []
    for b in range(5):  # one batch at a time: full-size files (10,000 per batch) stay cheap to write
        images, labels = patterns(per_batch, 3, 32, 10, seed + 10 + b)
        batches.append((images, labels))
        _pickle(folder / f"data_batch_{b + 1}", {
            "batch_label": f"training batch {b + 1} of 5",
            "labels": labels.tolist(),
            "data": images.reshape(per_batch, 3072),  # channel-major: 1024 R, 1024 G, 1024 B
            "filenames": [f"img_{b * per_batch + i}.png" for i in range(per_batch)],
        })
    train, labels = (np.concatenate(parts) for parts in zip(*batches, strict=True))
    test, test_labels = patterns(n_test, 3, 32, 10, seed + 1)
    _pickle(folder / "test_batch", {
        "batch_label": "testing batch 1 of 1",
        "labels": test_labels.tolist(),
        "data": test.reshape(n_test, 3072),
        "filenames": [f"test_{i}.png" for i in range(n_test)],
    })
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}
    _pickle(folder / "batches.meta", meta)
    return {"train": (train, labels), "test": (test, test_labels)}


def write_cifar100(root: Path, n_train: int = 400, n_test: int = 200, seed: int = 0) -> dict:
    """`<root>/cifar-100-python/`: train, test, meta; `fine_labels` (torchvision's) and `coarse_labels`."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, (name, n) in enumerate((("train", n_train), ("test", n_test))):
        images, fine = patterns(n, 3, 32, 100, seed + i)
        out[name] = (images, fine)
        _pickle(folder / name, {
            "filenames": [f"{name}_{j}.png" for j in range(n)],
            "batch_label": f"{name} batch 1 of 1",
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),  # deliberately != fine: the loader must use fine_labels
            "data": images.reshape(n, 3072),
        })
    _pickle(folder / "meta", {"fine_label_names": [f"fine{j}" for j in range(100)],
                              "coarse_label_names": [f"coarse{j}" for j in range(20)]})
    return out


def pack_archive(root: Path, folder: str, archive: str, keep: bool = False) -> Path:
    """`<root>/ARCHIVE`: the .tar.gz torchvision downloads, holding `FOLDER/...`; the folder is removed (unless
    `keep`), as when the archive was copied in by hand and nothing is extracted yet."""
    import shutil
    import tarfile

    root = Path(root)
    path = root / archive
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root / folder, arcname=folder)
    if not keep:
        shutil.rmtree(root / folder)
    return path


# --- SVHN: MATLAB v5 .mat files, X (32, 32, 3, N), y (N, 1) with 10 for the digit 0 ----------------

def write_svhn(root: Path, n_train: int = 300, n_test: int = 100, n_extra: int = 0, seed: int = 0) -> dict:
    """`<root>/{train,test,extra}_32x32.mat` (extra only when n_extra > 0)."""
    from scipy.io import savemat

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, (part, n) in enumerate((("train", n_train), ("test", n_test), ("extra", n_extra))):
        if n == 0:
            continue
        images, digits = patterns(n, 3, 32, 10, seed + i)
        out[part] = (images, digits)
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        savemat(root / f"{part}_32x32.mat", {"X": np.ascontiguousarray(images.transpose(2, 3, 1, 0)), "y": y})
    return out


# --- MD5: real check, fake files -------------------------------------------------------------------

def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes(), usedforsecurity=False).hexdigest()


def _cifar_md5s(root: Path, cls: type) -> dict[str, str]:
    """File name -> MD5 of a CIFAR dataset's files under ROOT: in its folder, else inside its placed archive."""
    import tarfile

    folder = root / cls.base_folder
    if folder.is_dir():
        return {p.name: md5(p) for p in folder.iterdir() if p.is_file()}
    if not (root / cls.filename).is_file():
        return {}
    with tarfile.open(root / cls.filename, "r:gz") as tar:
        return {Path(m.name).name: hashlib.md5(tar.extractfile(m).read(), usedforsecurity=False).hexdigest()
                for m in tar.getmembers() if m.isfile()}


def trust_fake_md5(monkeypatch: object, root: Path) -> None:
    """Point torchvision's CIFAR10/CIFAR100/SVHN/MNIST MD5 tables (files, CIFAR's archives, MNIST's .gz
    in MNIST/raw/ or the root) at the fake files under `root` (tests and benchmarks only; `monkeypatch`:
    pytest's, whose undo restores the tables).

    torchvision's own integrity check still runs; it now accepts these files, and rejects them
    as soon as a test corrupts one.
    """
    from torchvision import datasets

    root = Path(root)
    for cls in (datasets.CIFAR10, datasets.CIFAR100):
        found = _cifar_md5s(root, cls)
        if not found:
            continue

        def fix(entries: list, found: dict = found) -> list:
            return [[name, found.get(name, old)] for name, old in entries]

        monkeypatch.setattr(cls, "train_list", fix(cls.train_list))
        monkeypatch.setattr(cls, "test_list", fix(cls.test_list))
        monkeypatch.setattr(cls, "meta", dict(cls.meta) | {"md5": found.get(cls.meta["filename"], cls.meta["md5"])})
        if (root / cls.filename).is_file():
            monkeypatch.setattr(cls, "tgz_md5", md5(root / cls.filename))
    gz_dirs = (root / "MNIST" / "raw", root)
    resources = [(name, next((md5(d / name) for d in gz_dirs if (d / name).is_file()), old))
                 for name, old in datasets.MNIST.resources]
    monkeypatch.setattr(datasets.MNIST, "resources", resources)
    split_list = {part: [url, name, md5(root / name) if (root / name).is_file() else old]
                  for part, (url, name, old) in datasets.SVHN.split_list.items()}
    monkeypatch.setattr(datasets.SVHN, "split_list", split_list)
