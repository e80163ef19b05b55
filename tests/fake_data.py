"""Tiny datasets in EXACTLY torchvision's on-disk formats: the writers live in benchmarks/fake_data.py
(benchmarks write these files too, and must not import tests); this module keeps `from tests import fake_data`
working for the tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # as the benchmark scripts import

from fake_data import (
    MNIST_FILES,
    idx_images,
    idx_labels,
    md5,
    pack_archive,
    patterns,
    trust_fake_md5,
    write_cifar10,
    write_cifar100,
    write_mnist,
    write_svhn,
)

__all__ = ["MNIST_FILES", "idx_images", "idx_labels", "md5", "pack_archive", "patterns", "trust_fake_md5",
           "write_cifar10", "write_cifar100", "write_mnist", "write_svhn"]
