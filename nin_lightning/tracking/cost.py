"""What a model costs: its parameters and its multiply-accumulates (MACs) for one image."""

from __future__ import annotations

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
