"""scikit-learn's bundled 8x8 digits: real handwritten digits that ship with the wheel."""

from __future__ import annotations

import numpy as np
import torch

from nin_lightning.data.base import NiNDataModule, Split

TEST_FRACTION = 0.2
TEST_SEED = 0


class DigitsDataModule(NiNDataModule):
    """All 1,797 digits as uint8 [0, 255]: a fixed, stratified 20 % test split (seed 0); validation from the rest."""

    reads_root = False  # the images ship inside scikit-learn

    def load(self) -> tuple[Split, Split]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        x = torch.from_numpy(np.clip(bunch.images * 16.0, 0, 255).astype(np.uint8)[:, None])
        y = torch.from_numpy(bunch.target.astype(np.int64))
        train, test = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION, random_state=TEST_SEED,
                                       stratify=bunch.target)
        return Split(x[train], y[train]), Split(x[test], y[test])
