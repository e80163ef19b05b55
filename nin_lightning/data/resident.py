"""Device-resident batches (`dataset.device_resident`): the uint8 split lives on the device, so a batch is one
indexing op there, with no DataLoader, no workers and no host-to-device copy per step.

Training: epoch e's order is `randperm(n)` on the device from a generator seeded by (seed, e) alone, the
same on every rank; rank r takes every world-th image from position r on, the same count on each rank
(disjoint shards, equal steps, so no DDP rank waits for another), in whole batches (drop_last: every
step has one shape, which a compiled model needs). The order needs no state to replay, and an epoch's
iteration starts after the batches the Trainer already trained in it (its batch progress, which a
checkpoint restores): a run resumed mid-epoch trains exactly the batches the straight run would have.
Evaluation: in order, this rank's unpadded shard (every image exactly once over the ranks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit seed for epoch EPOCH's order: no RNG state to carry across a resume, the same on every rank."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])


class DeviceBatches:
    """(images, labels) batches of a split (uint8 NCHW images, int64 labels) already on its device; `len()`
    batches per epoch.

    `epoch`: the epoch being trained; `position`: how many of its batches the Trainer has trained. Both
    come from the Trainer's loop and are read when an epoch's iteration starts (Lightning asks for the
    first batch of a sized loader only inside the epoch, after restoring its progress from a checkpoint).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool,
                 seed: int = 0, rank: int = 0, world: int = 1, epoch: Callable[[], int] = lambda: 0,
                 position: Callable[[], int] = lambda: 0) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world = rank, world
        self._epoch, self._position = epoch, position
        n = len(labels)
        if shuffle:
            # the same count on every rank; whole batches only, unless that leaves none
            self.per_rank = n // world
            self.batches = max(1, self.per_rank // batch_size) if self.per_rank else 0
            self.per_rank = min(self.per_rank, self.batches * batch_size)
        else:
            self.per_rank = len(range(rank, n, world))  # unpadded: shards differ by one image at most
            self.batches = -(-self.per_rank // batch_size)

    def __len__(self) -> int:
        return self.batches

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's indices for EPOCH, on the split's device."""
        device = self.images.device
        if not self.shuffle:
            return torch.arange(self.rank, len(self.labels), self.world, device=device)
        generator = torch.Generator(device=device).manual_seed(epoch_seed(self.seed, epoch))
        perm = torch.randperm(len(self.labels), generator=generator, device=device)
        return perm[self.rank::self.world][: self.per_rank]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = self._epoch(), self._position()  # start > 0: resumed within this epoch
        order = self.order(epoch)
        images, labels = self.images, self.labels
        for b in range(start, self.batches):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield images[index], labels[index]

    # Lightning's protocol of a loader that resumes mid-epoch (without it, Lightning warns that the run's
    # results after such a resume are unreliable). The position itself comes back with the Trainer's progress.
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": int(self._epoch()), "position": int(self._position())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to load: the epoch and position are read from the restored Trainer when iteration starts."""
