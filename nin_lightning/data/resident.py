"""Device-resident batches (`dataset.device_resident`; design in docs/gpu-fast-path.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch


def derived_seed(*keys: int) -> int:
    """A 64-bit seed derived from KEYS alone (e.g. seed and epoch): no RNG state to carry across a resume."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0])


class DeviceBatches:
    """`len()` (images, labels) batches per epoch of a split already on its device; resumable mid-epoch: `epoch`
    and `position` are read when iteration starts, after Lightning restored its progress from a checkpoint."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool,
                 seed: int = 0, rank: int = 0, world: int = 1, epoch: Callable[[], int] = lambda: 0,
                 position: Callable[[], int] = lambda: 0) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world = rank, world
        self._epoch, self._position = epoch, position
        n = len(labels)
        if shuffle:  # the same count on every rank; whole batches only, unless that leaves none
            self.per_rank = n // world
            self.batches = max(1, self.per_rank // batch_size) if self.per_rank else 0
            self.per_rank = min(self.per_rank, self.batches * batch_size)
        else:  # unpadded: shards differ by one image at most
            self.per_rank = len(range(rank, n, world))
            self.batches = -(-self.per_rank // batch_size)

    def __len__(self) -> int:
        return self.batches

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's indices for EPOCH, on the split's device."""
        device = self.images.device
        if not self.shuffle:
            return torch.arange(self.rank, len(self.labels), self.world, device=device)
        generator = torch.Generator(device=device).manual_seed(derived_seed(self.seed, epoch))
        perm = torch.randperm(len(self.labels), generator=generator, device=device)
        return perm[self.rank::self.world][: self.per_rank]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(self._epoch())
        for b in range(self._position(), self.batches):  # position > 0: resumed within this epoch
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.images[index], self.labels[index]

    # Lightning's protocol of a loader that resumes mid-epoch (without it, Lightning warns that the run's
    # results after such a resume are unreliable). The position itself comes back with the Trainer's progress.
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": int(self._epoch()), "position": int(self._position())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to load: the epoch and position are read from the restored Trainer when iteration starts."""
