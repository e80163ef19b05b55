"""Exact resume: the RNG states go into every checkpoint and come back when training resumes from one."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class RNGState(Callback):
    """Saves the RNG states with every checkpoint and restores them when training resumes from one.

    With them, an epoch after a resume draws the same shuffling order, dropout masks and augmentations
    as it would have in an uninterrupted run: the DataLoader's RandomSampler seeds itself from the
    global torch RNG when the epoch's iterator starts, and the on-device augmentation uses it as well.
    """

    # Tensors and plain Python types only, so that checkpoints still load with torch.load(weights_only=True).
    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": (str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        name, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = state_dict["python"]
        random.setstate((version, tuple(internal), gauss_next))
        if "cuda" in state_dict and torch.cuda.is_available():
            states = state_dict["cuda"][: torch.cuda.device_count()]
            torch.cuda.set_rng_state_all(states)
