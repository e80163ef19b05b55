"""Exact resume: the RNG states go into every checkpoint and come back when training resumes from one."""

from __future__ import annotations

import os
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def _cuda_device(in_use: bool = True) -> torch.device | None:
    """This process's CUDA device, or None without CUDA (or, with IN_USE, when this process has not used it)."""
    if torch.cuda.is_available() and (torch.cuda.is_initialized() or not in_use):
        return torch.device("cuda", torch.cuda.current_device())
    return None


class RNGState(Callback):
    """The RNG states in every checkpoint, restored on resume (the same shuffling, dropout and augmentations as
    without the stop); ranks > 0 reseed torch by (seed, rank) at `setup` to draw dropout masks of their own."""

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer
        if stage == "fit" and trainer.global_rank > 0:
            seed = int(os.environ.get("PL_GLOBAL_SEED", "0"))
            sequence = np.random.SeedSequence([seed, trainer.global_rank, 0xD509])
            torch.manual_seed(int(sequence.generate_state(1, np.uint64)[0]))

    def _gather(self) -> list[torch.Tensor]:
        """Every rank's torch CPU state, then its CUDA device's (if any), in rank order (one all-gather)."""
        trainer = self._trainer
        device = _cuda_device()
        mine = torch.cat([torch.get_rng_state()] + ([torch.cuda.get_rng_state(device)] if device is not None else []))
        if trainer is None or trainer.world_size <= 1:
            return [mine]
        gathered = trainer.strategy.all_gather(mine.to(trainer.strategy.root_device))
        return list(gathered.cpu().unbind(0))

    # Tensors and plain Python types only, so that checkpoints still load with torch.load(weights_only=True).
    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": (str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
            "python": random.getstate(),
            "ranks": self._gather(),  # rank r's torch CPU (+ CUDA) state
        }
        device = _cuda_device()
        if device is not None:
            state["cuda"] = torch.cuda.get_rng_state(device)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        name, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = state_dict["python"]
        random.setstate((version, tuple(internal), gauss_next))
        device = _cuda_device(in_use=False)
        cuda = state_dict.get("cuda")
        if isinstance(cuda, list) and torch.cuda.is_available():  # written before per-rank states: rank 0's list
            torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
        elif cuda is not None and device is not None:
            torch.cuda.set_rng_state(cuda, device)
        rank = self._trainer.global_rank if self._trainer is not None else 0
        ranks = state_dict.get("ranks") or []
        if rank < len(ranks):  # this rank's own states (rank 0's are the ones above)
            cpu_size = torch.get_rng_state().numel()
            torch.set_rng_state(ranks[rank][:cpu_size].clone())
            if device is not None and ranks[rank].numel() > cpu_size:
                torch.cuda.set_rng_state(ranks[rank][cpu_size:].clone(), device)
