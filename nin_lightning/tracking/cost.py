"""What a model costs: its parameters and its multiply-accumulates (MACs) for one image."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def model_cost(net: nn.Module, image_shape: tuple[int, int, int]) -> dict[str, int]:
    """{"params": trainable and frozen parameters, "macs": multiply-accumulates of one forward pass of one
    image of IMAGE_SHAPE (C, H, W), in eval mode}.

    MACs are torch's FLOP count / 2: torch counts a multiply-accumulate of a convolution or a linear layer
    as 2 FLOPs and leaves out element-wise ops (ReLU, batch norm, pooling), the usual convention for MACs.
    Build NET on the meta device (`with torch.device("meta")`) to count without allocating its weights."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(torch.empty(1, *image_shape, device=device))
    finally:
        net.train(was_training)
    return {"params": sum(p.numel() for p in net.parameters()), "macs": counter.get_total_flops() // 2}


def activations_per_image(net: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """Values the layers of NET output for one image of IMAGE_SHAPE in training mode (in-place ones reuse their
    input's memory and are not counted): about what a training step keeps for the backward pass, per image.
    Build NET on the meta device to count without allocating."""
    device = next(net.parameters()).device
    leaves = [m for m in net.modules() if not list(m.children()) and not getattr(m, "inplace", False)]  # no new memory
    count = [0]

    def add(module: nn.Module, inputs: Any, output: Any) -> None:
        count[0] += output.numel() if isinstance(output, torch.Tensor) else 0

    hooks = [m.register_forward_hook(add) for m in leaves]
    was_training = net.training
    net.train()
    try:
        net(torch.empty(1, *image_shape, device=device))
    finally:
        net.train(was_training)
        for hook in hooks:
            hook.remove()
    return count[0]
