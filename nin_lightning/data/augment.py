"""Batched, on-device normalization and augmentation of uint8 image batches.

Every op takes a whole batch (N, C, H, W) and draws its randomness per sample,
so one call replaces N per-image PIL transforms.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [0, 255] -> float, standardized per channel."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x.float().div_(255.0) - m) / s


def random_crop(x: torch.Tensor, padding: int, mode: str = "zero", generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """Pad by `padding` (zero or reflect) and crop back to the input size at a random offset per sample."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    pad_mode = "constant" if mode == "zero" else "reflect"
    padded = F.pad(x, (padding,) * 4, mode=pad_mode)
    offsets = torch.randint(0, 2 * padding + 1, (2, n), device=x.device, generator=generator)
    rows = (offsets[0, :, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (offsets[1, :, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chan, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the batch left-right (per sample)."""
    mask = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a size x size square (clipped at the border) at a random centre per sample."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), device=x.device, generator=generator)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device, generator=generator)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    y0, x0 = cy - size // 2, cx - size // 2
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    return x * (~inside).unsqueeze(1).to(x.dtype)
