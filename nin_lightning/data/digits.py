"""scikit-learn's bundled 8x8 digits: real handwritten digits that ship with the wheel."""

from __future__ import annotations

import numpy as np
import torch

from nin_lightning.data.base import NiNDataModule, Split

TEST_FRACTION = 0.2
TEST_SEED = 0


def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 (N, 1, 8, 8) in [0, 255] and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(bunch.images * 16.0, 0, 255).astype(np.uint8)[:, None]
    return images, bunch.target.astype(np.int64)


class DigitsDataModule(NiNDataModule):
    """A fixed, stratified 20 % test split (seed 0); validation is carved from the rest."""

    reads_root = False  # the images ship inside scikit-learn

    def load(self) -> tuple[Split, Split]:
        from sklearn.model_selection import train_test_split

        images, labels = load_digits_uint8()
        idx_train, idx_test = train_test_split(
            np.arange(len(labels)), test_size=TEST_FRACTION, random_state=TEST_SEED, stratify=labels
        )
        x, y = torch.from_numpy(images), torch.from_numpy(labels)
        return Split(x[idx_train], y[idx_train]), Split(x[idx_test], y[idx_test])
