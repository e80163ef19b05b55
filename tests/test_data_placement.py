"""Data copied into dataset.root by hand, on a machine without internet: torchvision's archives and files are
found, MD5-checked and extracted into torchvision's layout, and every "not found" names the exact files.

The files are tiny but in the real formats (benchmarks/fake_data.py): CIFAR's .tar.gz holding the pickled
batches, MNIST's gzipped idx files, SVHN's MATLAB files. `trust_fake_md5` points torchvision's MD5 tables at
them in-process; through the real CLI (no patch) the same fake archive fails the real MD5 check by name.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nin_lightning.config import validate
from nin_lightning.data import build_datamodule, check_data_files
from nin_lightning.errors import UserError
from nin_lightning.run import load_data_early
from tests import fake_data as fd
from tests.conftest import ROOT, cli_env, error_lines

MNIST_GZ = [f"{name}.gz" for pair in fd.MNIST_FILES.values() for name in pair]


def _cifar10(root: Path) -> tuple[dict, list[Path]]:
    written = fd.write_cifar10(root, per_batch=24, n_test=40)
    return written, [fd.pack_archive(root, "cifar-10-batches-py", "cifar-10-python.tar.gz")]


def _cifar100(root: Path) -> tuple[dict, list[Path]]:
    written = fd.write_cifar100(root, n_train=200, n_test=100)
    return written, [fd.pack_archive(root, "cifar-100-python", "cifar-100-python.tar.gz")]


def _mnist(root: Path) -> tuple[dict, list[Path]]:
    """The four .gz files as downloaded, straight into dataset.root (torchvision's MNIST/raw/ also works)."""
    return fd.write_mnist(root, n_train=120, n_test=40, gz=True, flat=True), [root / name for name in MNIST_GZ]


def _svhn(root: Path) -> tuple[dict, list[Path]]:
    return fd.write_svhn(root, n_train=120, n_test=40), [root / "train_32x32.mat", root / "test_32x32.mat"]


PLACE = {"cifar10": _cifar10, "cifar100": _cifar100, "mnist": _mnist, "svhn": _svhn}
# What torchvision reads once the placed files are in its layout.
READ = {
    "cifar10": [f"cifar-10-batches-py/{n}" for n in
                ("data_batch_1", "data_batch_5", "test_batch", "batches.meta")],
    "cifar100": ["cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"],
    "mnist": [f"MNIST/raw/{name[:-3]}" for name in MNIST_GZ],
    "svhn": ["train_32x32.mat", "test_32x32.mat"],
}


def _md5s(paths: list[Path]) -> dict[Path, str]:
    return {p: hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest() for p in paths}


def _dataset(compose_cfg, name: str, root: Path):
    return validate(compose_cfg(f"dataset={name}", f"dataset.root={root}", "dataset.val_size=20")).dataset


@pytest.mark.parametrize("name", list(PLACE))
def test_placed_archives_are_found_checked_and_extracted(name, tmp_path, monkeypatch, compose_cfg):
    root = tmp_path / "data"
    written, placed = PLACE[name](root)
    assert not any((root / rel).exists() for rel in READ[name] if root / rel not in placed)  # none extracted yet
    fd.trust_fake_md5(monkeypatch, root)
    placed_md5 = _md5s(placed)
    cfg = _dataset(compose_cfg, name, root)

    check_data_files(cfg)  # the preflight counts the placed files as data
    dm = load_data_early(build_datamodule(cfg))  # what run.train does: local rank 0 extracts, then loads

    assert all((root / rel).is_file() for rel in READ[name])  # torchvision's layout
    assert _md5s(placed) == placed_md5  # the user's files are untouched
    test_images, test_labels = written["test"]
    np.testing.assert_array_equal(dm.test_split.images.numpy(), test_images)  # pixel for pixel
    np.testing.assert_array_equal(dm.test_split.labels.numpy(), test_labels)
    assert len(dm.train_split) + len(dm.val_split) == len(written["train"][1])
    assert build_datamodule(cfg).placed_archives() == []  # a second start has nothing left to extract


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist"])
def test_a_placed_archive_that_fails_its_md5_is_named_and_nothing_is_extracted(name, tmp_path, compose_cfg):
    """No patch here: torchvision's real MD5s, which the fake archives do not have."""
    root = tmp_path / "data"
    _, placed = PLACE[name](root)
    dm = build_datamodule(_dataset(compose_cfg, name, root))
    with pytest.raises(UserError) as info:
        load_data_early(dm)
    message = str(info.value)
    assert "\n" not in message and "MD5 mismatch" in message
    assert str(placed[0]) in message  # the archive (MNIST: the first .gz), by its full path
    assert not any((root / rel).exists() for rel in READ[name])


def test_a_folder_missing_one_file_gets_it_from_the_archive_and_keeps_its_own(tmp_path, monkeypatch, compose_cfg):
    root = tmp_path / "data"
    fd.write_cifar10(root, per_batch=24, n_test=40)
    fd.pack_archive(root, "cifar-10-batches-py", "cifar-10-python.tar.gz", keep=True)
    fd.trust_fake_md5(monkeypatch, root)
    kept = root / "cifar-10-batches-py" / "data_batch_1"
    kept_stat = kept.stat()
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    dm = load_data_early(build_datamodule(_dataset(compose_cfg, "cifar10", root)))
    assert (root / "cifar-10-batches-py" / "test_batch").is_file() and len(dm.test_split) == 40
    assert kept.stat().st_mtime_ns == kept_stat.st_mtime_ns  # not rewritten


@pytest.mark.parametrize(("name", "files"), [
    ("cifar10", ["cifar-10-batches-py", "cifar-10-python.tar.gz"]),
    ("cifar100", ["cifar-100-python", "cifar-100-python.tar.gz"]),
    ("mnist", MNIST_GZ),
    ("svhn", ["train_32x32.mat", "test_32x32.mat"]),
])
def test_not_found_names_every_file_and_where_it_goes(name, files, tmp_path, compose_cfg):
    root = tmp_path / "empty"
    with pytest.raises(UserError) as info:
        check_data_files(_dataset(compose_cfg, name, root))
    message = str(info.value)
    assert "\n" not in message and str(root) in message
    for file in files:
        assert file in message, (file, message)
    assert "docs/data.md" in message and "dataset.download=true" in message


def test_docs_list_each_file_and_torchvision_md5():
    """docs/data.md's table holds the names and MD5s the code checks (torchvision's tables)."""
    from torchvision import datasets

    text = (ROOT / "docs" / "data.md").read_text()
    expected = [*datasets.MNIST.resources,
                *((c.filename, c.tgz_md5) for c in (datasets.CIFAR10, datasets.CIFAR100)),
                *((name, md5) for _, name, md5 in datasets.SVHN.split_list.values())]
    for file, md5 in expected:
        assert file in text and md5 in text, file


def test_cli_finds_a_placed_cifar100_archive_and_checks_it(tmp_path):
    """The newcomer's trial: cifar-100-python.tar.gz copied into dataset.root was ignored ("not found").
    Now it is found and checked; this fake one fails the real MD5 check, by name, and no run dir is left."""
    root = tmp_path / "data"
    _cifar100(root)
    env = cli_env(tmp_path)
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "dataset=cifar100", f"dataset.root={root}",
                             "logger=none"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    (line,) = [ln for ln in error_lines(result.stderr) if ln.startswith("error:")]
    assert str(root / "cifar-100-python.tar.gz") in line and "MD5 mismatch" in line, line
    assert not (root / "cifar-100-python").exists()
    runs = tmp_path / "outputs" / "runs"
    assert not runs.exists() or not any(runs.iterdir())
