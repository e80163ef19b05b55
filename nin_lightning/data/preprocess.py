"""`dataset.preprocess=gcn_zca`: the paper's global contrast normalization + ZCA whitening (docs/data.md)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch

from nin_lightning.atomic_files import atomic_write
from nin_lightning.config import DatasetConfig
from nin_lightning.data.augment import PerDevice

VERSION = 1
ZCA_FILTER_BIAS = 0.1  # added to every eigenvalue of the covariance (pylearn2 / Goodfellow: 0.1)
GCN_MIN_DIVISOR = 1e-8  # a flat image (zero norm after mean removal) stays all zeros
FIT_MAX_IMAGES = 100_000  # a 3072-dim covariance is well estimated long before SVHN's 598k images
FIT_SEED = 0
FIT_CHUNK = 4096
CACHE_DIR = ".nin_cache"


def gcn(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) any dtype -> float32 (N, D), per image zero mean and a root-mean-square of 1 per pixel."""
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


class GcnZca(PerDevice):
    """uint8 (N, C, H, W) batch -> GCN + ZCA-whitened float32 (N, C, H, W), on the batch's device."""

    def __init__(self, mean: torch.Tensor, whiten: torch.Tensor) -> None:
        super().__init__(mean, whiten)
        self.mean, self.whiten = mean, whiten

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean, whiten = self.on(x.device)
        return ((gcn(x) - mean) @ whiten).view(x.shape)


def cache_path(cfg: DatasetConfig, train_images: torch.Tensor) -> Path:
    """Keyed by a hash of the training images' bytes and of the preprocessing constants."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((VERSION, cfg.name, tuple(train_images.shape), ZCA_FILTER_BIAS, GCN_MIN_DIVISOR,
                   FIT_MAX_IMAGES, FIT_SEED)).encode())
    h.update(memoryview(train_images.contiguous().numpy()).cast("B"))
    return Path(cfg.root).expanduser() / CACHE_DIR / f"{cfg.name}-gcn_zca-{h.hexdigest()}.pt"


def build(cfg: DatasetConfig, train_images: torch.Tensor) -> GcnZca:
    """The GCN+ZCA transform fitted on `train_images` (the training split), from the cache if present."""
    path = cache_path(cfg, train_images)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return GcnZca(state["mean"], state["whiten"])
    except FileNotFoundError:
        pass
    except Exception as exc:  # a bad cache is refitted, never fatal
        warnings.warn(f"ignoring unreadable ZCA cache {path} ({type(exc).__name__}); refitting", stacklevel=2)
    prep = GcnZca(*fit_zca(train_images))
    try:  # atomic: concurrent ranks never read a half-written file
        atomic_write(path, lambda fh: torch.save({"mean": prep.mean, "whiten": prep.whiten}, fh))
    except OSError as exc:
        warnings.warn(f"could not cache the ZCA fit in {path.parent} ({exc}); it will be refitted next run",
                      stacklevel=2)
    return prep
