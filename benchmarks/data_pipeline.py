"""Images/s delivered (augmented + normalized, batch 256, CIFAR-shaped) by three pipelines, in one run:

(a) the project's: uint8 tensors in memory, a loader of the Split (one indexing op per batch) and
    the batched crop/flip/normalize of `NiNDataModule.on_after_batch_transfer` (here on the CPU);
(b) torchvision's standard per-sample one: PIL images, RandomCrop(32, padding=4), RandomHorizontalFlip,
    ToTensor, Normalize, in a DataLoader with 2 workers;
(c) the project's device-resident one (`dataset.device_resident=true`, `auto` on GPUs): the split already
    on the device, a randperm per epoch and one indexing op per batch, no DataLoader (data/resident.py),
    then the same batched ops. `ratio:` is (a)/(b); `resident ratio:` is (c)/(a), which must not be below 1
    on a CPU (on a GPU, (c) also saves the host-to-device copy of every batch).

Then the peak and held memory (RSS) of loading CIFAR-10 (full-size files in torchvision's format,
random pixels) with CIFAR10DataModule, measured in a fresh child process.

    python benchmarks/data_pipeline.py [--images 10000] [--epochs 3] [--threads 1] [--no-memory] [--device cuda]

Not a timed test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nin_lightning.config import DatasetConfig  # noqa: E402
from nin_lightning.data.base import NiNDataModule, Split  # noqa: E402
from nin_lightning.data.resident import DeviceBatches  # noqa: E402

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
BATCH = 256
CPU = torch.device("cpu")


def cifar_cfg(**kw) -> DatasetConfig:
    base = dict(name="cifar10", num_classes=10, in_channels=3, image_size=32, preset="cifar", mean=MEAN, std=STD,
                batch_size=BATCH, val_size=0, crop_padding=4, padding_mode="zero", flip=True)
    return DatasetConfig(**{**base, **kw})


class InMemory(NiNDataModule):
    def __init__(self, cfg: DatasetConfig, images: np.ndarray, labels: np.ndarray) -> None:
        super().__init__(cfg)
        self._split = Split(torch.from_numpy(images), torch.from_numpy(labels))

    def load(self) -> tuple[Split, Split]:
        return self._split, self._split


def project_path(images: np.ndarray, labels: np.ndarray, epochs: int, resident: bool = False,
                 device: torch.device = CPU) -> float:
    """(a), or with RESIDENT (c): the DataModule's training batches on DEVICE, augmented and normalized."""
    dm = InMemory(cifar_cfg(), images, labels)
    dm.setup("fit")
    split = dm.train_split
    if resident:  # what NiNDataModule.train_dataloader() builds with dataset.device_resident on DEVICE
        loader = DeviceBatches(split.images.to(device), split.labels.to(device), BATCH, shuffle=True)
    else:
        loader = dm.train_dataloader()
    # what on_after_batch_transfer asks of the Trainer: training, and the rank (0: the global RNG, one process)
    dm.trainer = SimpleNamespace(training=True, global_rank=0)

    def epoch() -> int:
        n = 0
        for images_, labels_ in loader:  # Lightning's batch_to_device: a copy unless already there
            batch = (images_.to(device, non_blocking=True), labels_.to(device, non_blocking=True))
            x, _ = dm.on_after_batch_transfer(batch, 0)
            n += len(x)
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return n

    epoch()  # warm-up
    start, n = time.perf_counter(), 0
    for _ in range(epochs):
        n += epoch()
    return n / (time.perf_counter() - start)


def synthetic(n: int) -> tuple[np.ndarray, np.ndarray]:
    """N random CIFAR-shaped uint8 images (N, 3, 32, 32) and labels."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def project_rates(images: np.ndarray, labels: np.ndarray, epochs: int, device: torch.device = CPU
                  ) -> tuple[float, float]:
    """Images/s of (a) and (c) on DEVICE, interleaved, the better of two each (a shared machine's load hits both
    alike); (c) / (a) is the `resident ratio`."""
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(2):
        for resident in (False, True):
            rates[resident].append(project_path(images, labels, epochs, resident, device))
    return max(rates[False]), max(rates[True])


class PILDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per sample: HWC uint8 -> PIL image -> transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.data = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def torchvision_path(images: np.ndarray, labels: np.ndarray, epochs: int) -> float:
    from torchvision import transforms as T

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(MEAN, STD)])
    loader = torch.utils.data.DataLoader(PILDataset(images, labels, transform), batch_size=BATCH, shuffle=True,
                                         num_workers=2, persistent_workers=True)

    def epoch() -> int:
        n = 0
        for x, _ in loader:
            n += len(x)
        return n

    epoch()  # warm-up (starts the workers)
    start, n = time.perf_counter(), 0
    for _ in range(epochs):
        n += epoch()
    return n / (time.perf_counter() - start)


# --- memory: a child process loads full-size CIFAR-10 -------------------------------------------------

def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


def memory_child(root: str) -> None:
    import pytest
    import torchvision.datasets  # noqa: F401 - imported before the baseline, so not counted
    from fake_data import trust_fake_md5

    from nin_lightning.data.cifar import CIFAR10DataModule

    trust_fake_md5(pytest.MonkeyPatch(), Path(root))  # random pixels: accept their MD5s (benchmark only)
    dm = CIFAR10DataModule(cifar_cfg(root=root, val_size=5000, batch_size=128))
    before = _rss_mb()
    dm.setup("fit")
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed load-time buffers back to the OS before measuring
    held = _rss_mb() - before
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3 - before  # ru_maxrss is in kB
    nbytes = {name: getattr(dm, f"{name}_split").images.nbytes / 1e6 for name in ("train", "val", "test")}
    print(json.dumps({"held": held, "peak": peak, **nbytes}))


def write_full_cifar10(root: Path) -> None:
    """Five 10,000-image batches + a 10,000-image test batch of random pixels, in torchvision's format."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        entry = {"batch_label": name, "labels": rng.integers(0, 10, 10000).tolist(),
                 "data": rng.integers(0, 256, (10000, 3072), dtype=np.uint8), "filenames": [""] * 10000}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f, protocol=2)


def measure_memory() -> dict:
    with tempfile.TemporaryDirectory(prefix="nin-cifar-bench-") as tmp:
        write_full_cifar10(Path(tmp))
        out = subprocess.run([sys.executable, __file__, "--memory-child", tmp], cwd=REPO, check=True,
                             capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the project's path (its ops run in the main process)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where (a) and (c) run")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return

    images, labels = synthetic(args.images)
    print(f"{args.images} synthetic CIFAR-shaped uint8 images, batch {BATCH}, {args.epochs} timed epochs "
          f"after 1 warm-up; crop 32 (padding 4) + flip + normalize")
    torch.set_num_threads(args.threads)
    ours, resident = project_rates(images, labels, args.epochs, torch.device(args.device))
    where = f"{args.threads} thread" if args.device == "cpu" else args.device
    print(f"project (Split loader + batched on-device ops, {where}): {ours:,.0f} images/s")
    print(f"project, device-resident (randperm + one index per batch, {where}): {resident:,.0f} images/s")
    theirs = torchvision_path(images, labels, args.epochs)
    print(f"torchvision (PIL per sample, DataLoader num_workers=2):            {theirs:,.0f} images/s")
    print(f"ratio: {ours / theirs:.1f}")
    print(f"resident ratio: {resident / ours:.2f}")
    if not args.no_memory:
        m = measure_memory()
        print(f"memory, CIFAR10DataModule.setup() on full-size CIFAR-10 files (child process): "
              f"train {m['train']:.1f} MB + val {m['val']:.1f} MB + test {m['test']:.1f} MB of uint8 tensors")
        print(f"  RSS held after setup: +{m['held']:.1f} MB (train set {m['train'] + m['val']:.1f} MB of it); "
              f"peak RSS during load: +{m['peak']:.1f} MB")


if __name__ == "__main__":
    main()
