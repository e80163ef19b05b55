"""The paper's optional preprocessing (`dataset.preprocess=gcn_zca`): global contrast normalization + ZCA.

Lin et al. preprocess CIFAR "as in Goodfellow et al. (maxout)": pylearn2's GCN (each image minus its
mean, scaled to a fixed L2 norm of 55) then ZCA whitening with filter_bias 0.1. Here:

* GCN scales each image to a root-mean-square of 1 per pixel, i.e. an L2 norm of sqrt(C*H*W); that is
  55.4 for 3x32x32 images (Goodfellow's 55) and keeps ZCA_FILTER_BIAS meaningful for 1x28x28 images too.
* ZCA is fitted on the TRAINING split only (never validation or test), on at most FIT_MAX_IMAGES images
  (a seeded subset beyond that), and cached on disk under `<dataset.root>/.nin_cache/`, keyed by a hash
  of the training images' bytes and of these constants: a different split seed, val_size or file gives
  a different key, and a re-run loads the matrix instead of refitting.
* It runs batched on the device after the batch transfer: uint8 batch -> float GCN -> (x - mean) @ W.
  It replaces the per-channel mean/std normalization (dataset.mean/std are ignored in this mode).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch

from nin_lightning.atomic_files import atomic_write
from nin_lightning.config import DatasetConfig

VERSION = 1
ZCA_FILTER_BIAS = 0.1  # added to every eigenvalue of the covariance (pylearn2 / Goodfellow: 0.1)
GCN_MIN_DIVISOR = 1e-8  # a flat image (zero norm after mean removal) stays all zeros
FIT_MAX_IMAGES = 100_000  # a 3072-dim covariance is well estimated long before SVHN's 598k images
FIT_SEED = 0
FIT_CHUNK = 4096
CACHE_DIR = ".nin_cache"


def gcn(x: torch.Tensor) -> torch.Tensor:
    """Global contrast normalization of a batch: (N, ...) any dtype -> float32 (N, D), per-image
    zero mean and a root-mean-square of 1 per pixel."""
    flat = x.reshape(len(x), -1).float()
    flat = flat - flat.mean(dim=1, keepdim=True)
    norm = flat.norm(dim=1, keepdim=True).clamp_min(GCN_MIN_DIVISOR)
    return flat * (flat.shape[1] ** 0.5 / norm)


def fit_zca(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), W (D, D)) of ZCA on GCN'd `images` (uint8 NCHW): W = V diag(1/sqrt(l + bias)) V^T."""
    n = len(images)
    if n > FIT_MAX_IMAGES:
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(FIT_SEED))[:FIT_MAX_IMAGES]
        images = images[pick.sort().values]
        n = FIT_MAX_IMAGES
    d = images[0].numel()
    total = torch.zeros(d, dtype=torch.float64)
    gram = torch.zeros(d, d, dtype=torch.float64)
    for start in range(0, n, FIT_CHUNK):
        chunk = gcn(images[start:start + FIT_CHUNK])
        total += chunk.sum(0, dtype=torch.float64)
        gram += (chunk.T @ chunk).double()
    mean = total / n
    cov = gram / n - torch.outer(mean, mean)
    eigvals, eigvecs = torch.linalg.eigh(cov)
    scale = (eigvals.clamp_min(0) + ZCA_FILTER_BIAS).rsqrt()
    whiten = (eigvecs * scale) @ eigvecs.T
    return mean.float(), whiten.float()


def cache_key(name: str, train_images: torch.Tensor) -> str:
    """A hash of the training images' bytes and of the preprocessing constants."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((VERSION, name, tuple(train_images.shape), ZCA_FILTER_BIAS, GCN_MIN_DIVISOR,
                   FIT_MAX_IMAGES, FIT_SEED)).encode())
    h.update(memoryview(train_images.contiguous().numpy()).cast("B"))
    return h.hexdigest()


class GcnZca:
    """uint8 (N, C, H, W) batch -> GCN + ZCA-whitened float32 (N, C, H, W), on the batch's device."""

    def __init__(self, mean: torch.Tensor, whiten: torch.Tensor) -> None:
        self.mean = mean
        self.whiten = whiten
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _params(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on_device:
            self._on_device[device] = (self.mean.to(device), self.whiten.to(device))
        return self._on_device[device]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean, whiten = self._params(x.device)
        return ((gcn(x) - mean) @ whiten).view(x.shape)


def _load_cached(path: Path) -> GcnZca | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return GcnZca(state["mean"], state["whiten"])
    except FileNotFoundError:
        return None
    except Exception as exc:  # a bad cache is refitted, never fatal
        warnings.warn(f"ignoring unreadable ZCA cache {path} ({type(exc).__name__}); refitting", stacklevel=3)
        return None


def _save_cached(path: Path, prep: GcnZca) -> None:
    """Atomic write, so concurrent ranks never read a half-written file."""
    try:
        atomic_write(path, lambda fh: torch.save({"mean": prep.mean, "whiten": prep.whiten}, fh))
    except OSError as exc:
        warnings.warn(f"could not cache the ZCA fit in {path.parent} ({exc}); it will be refitted next run",
                      stacklevel=3)


def cache_path(cfg: DatasetConfig, train_images: torch.Tensor) -> Path:
    key = cache_key(cfg.name, train_images)
    return Path(cfg.root).expanduser() / CACHE_DIR / f"{cfg.name}-gcn_zca-{key}.pt"


def build(cfg: DatasetConfig, train_images: torch.Tensor) -> GcnZca:
    """The GCN+ZCA transform fitted on `train_images` (the training split), from the cache if present."""
    path = cache_path(cfg, train_images)
    prep = _load_cached(path)
    if prep is None:
        prep = GcnZca(*fit_zca(train_images))
        _save_cached(path, prep)
    return prep
