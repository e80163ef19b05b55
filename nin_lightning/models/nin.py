"""Network in Network (Lin, Chen & Yan 2013): mlpconv blocks and a global-average-pooling head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nin_lightning.config import ModelConfig  # its defaults are NiN's: written once, in the schema

# The author's own (widths, kernel) of each mlpconv block; block 3 ends with the class count.
PRESETS: dict[str, tuple[tuple[tuple[int, ...], int], ...]] = {
    "cifar": (((192, 160, 96), 5), ((192, 192, 192), 5), ((192, 192), 3)),
    "svhn": (((128, 96, 64), 5), ((320, 256, 128), 5), ((384, 256), 5)),
    "mnist": (((96, 64, 48), 5), ((128, 96, 48), 5), ((128, 96), 5)),
}


def mlpconv(in_ch: int, widths: Sequence[int], kernel: int, batch_norm: bool, last_relu: bool = True) -> nn.Sequential:
    """k x k conv followed by two 1x1 convs, each followed by (BN and) ReLU."""
    layers: list[nn.Module] = []
    for i, out_ch in enumerate(widths):
        k = kernel if i == 0 else 1
        layers.append(nn.Conv2d(in_ch, out_ch, k, padding=k // 2, bias=not batch_norm))
        is_last = i == len(widths) - 1
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        if last_relu or not is_last:
            layers.append(nn.ReLU(inplace=True))
        in_ch = out_ch
    return nn.Sequential(*layers)


class NiN(nn.Module):
    """NiN with a 3x3/2 max-pool and dropout after blocks 1 and 2 and a GAP head after block 3."""

    def __init__(self, num_classes: int, in_channels: int, preset: str, width: float = ModelConfig.width,
                 dropout: float = ModelConfig.dropout, batch_norm: bool = ModelConfig.batch_norm,
                 init: str = ModelConfig.init, init_std: float = ModelConfig.init_std,
                 final_relu: bool = ModelConfig.final_relu) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"unknown NiN preset {preset!r}; choose one of {sorted(PRESETS)}")
        layers: list[nn.Module] = []
        in_ch = in_channels
        for i, (widths, kernel) in enumerate(PRESETS[preset]):
            last = i == len(PRESETS[preset]) - 1
            out = [max(1, round(w * width)) for w in widths] + ([num_classes] if last else [])
            layers.append(mlpconv(in_ch, out, kernel, batch_norm, last_relu=final_relu or not last))
            if not last:
                layers += [nn.MaxPool2d(3, stride=2, ceil_mode=True), nn.Dropout(dropout)]
            in_ch = out[-1]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reset_parameters(init, init_std)

    def reset_parameters(self, init: str, std: float) -> None:
        """The paper's N(0, std) conv init, or Kaiming (fan-out, ReLU); zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if init == "normal":
                    nn.init.normal_(m.weight, 0.0, std)
                elif init == "kaiming":
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                else:
                    raise ValueError(f"unknown init {init!r}; choose normal or kaiming")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, num_classes)."""
        return self.pool(self.features(x)).flatten(1)
