"""Batched, on-device normalization and augmentation of uint8 (N, C, H, W) batches, random per sample."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


class PerDevice:
    """Host tensors copied to each device once and kept there (a copy per batch would block: a sync per step)."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self._host = tensors
        self._on: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._on:
            self._on[device] = tuple(t.to(device) for t in self._host)
        return self._on[device]


class Normalizer(PerDevice):
    """uint8 [0, 255] -> float, standardized per channel: (x / 255 - mean) / std in one fused pass."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        m = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        super().__init__(1.0 / (255.0 * s), -m / s)  # x * scale + shift

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.on(x.device)
        return torch.addcmul(shift, x.float(), scale)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """One-off `Normalizer(mean, std)(x)` (a loop keeps its Normalizer, whose constants stay on the device)."""
    return Normalizer(mean, std)(x)


def random_crop_flip(x: torch.Tensor, padding: int, mode: str = "zero", flip: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Pad (zero or reflect), crop at a random offset per sample, mirror a random half (`flip`): one gather."""
    if padding <= 0 and not flip:
        return x
    n, c, h, w = x.shape
    dev = x.device
    if padding > 0:
        src = F.pad(x, (padding,) * 4, mode="constant" if mode == "zero" else "reflect")
        offsets = torch.randint(0, 2 * padding + 1, (2, n), device=dev, generator=generator)
    else:
        src = x
        offsets = torch.zeros(2, n, dtype=torch.long, device=dev)
    hp, wp = src.shape[-2:]
    cols = torch.arange(w, device=dev).expand(n, w)
    if flip:
        mirror = torch.rand(n, device=dev, generator=generator) < 0.5
        cols = torch.where(mirror.view(n, 1), cols.flip(-1), cols)
    rows = offsets[0].view(n, 1) + torch.arange(h, device=dev)  # (n, h)
    cols = offsets[1].view(n, 1) + cols  # (n, w)
    index = (rows.view(n, h, 1) * wp + cols.view(n, 1, w)).view(n, 1, h * w).expand(n, c, h * w)
    return src.reshape(n, c, hp * wp).gather(2, index).view(n, c, h, w)


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
