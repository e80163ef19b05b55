"""Every experiment preset runs one short epoch end to end on tiny files in its dataset's real format.

(Composition and validation of every preset are in test_config.py.) The presets are run as written,
shrunk only in data size, batch size and batch counts; mnist_reference also draws its test-error plot.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests import fake_data as fd

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
SHRINK = ["logger=none", "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
          "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false",
          "trainer.num_sanity_val_steps=0", "dataset.batch_size=8", "dataset.eval_batch_size=16"]


@pytest.fixture
def tiny_data(tmp_path, monkeypatch):
    root = tmp_path / "data"
    fd.write_mnist(root, n_train=90, n_test=30)
    fd.write_cifar10(root, per_batch=20, n_test=30)
    fd.write_cifar100(root, n_train=200, n_test=40)
    fd.write_svhn(root, n_train=90, n_test=30, n_extra=60)
    fd.trust_fake_md5(monkeypatch, root)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads on a shared 2-core box are slower than one
    yield root
    torch.set_num_threads(before)


def test_every_preset_is_listed():
    assert {"paper_cifar10", "paper_cifar100", "paper_svhn", "paper_mnist", "keras_cifar10", "mnist_reference",
            "fast_cifar10", "fast_cifar100", "fast_svhn", "fast_mnist"} <= set(EXPERIMENTS)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_preset_smoke_run(compose_cfg, tiny_data, tmp_path, name):
    from nin_lightning.run import train

    cfg = compose_cfg(f"experiment={name}", f"dataset.root={tiny_data}", *SHRINK)
    if cfg.dataset.name != "digits":
        cfg.dataset.val_size = 30  # a multiple of 30 for SVHN's paper split (2/3 train, 1/3 extra)
    run_dir = tmp_path / "run"
    train(cfg, run_dir=run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 1
    assert 0.0 <= metrics["test/acc"] <= 1.0
    if cfg.callbacks.test_curve:
        assert (run_dir / "test_curve.csv").read_text().count("\n") == 2  # header + one epoch
        assert (run_dir / "test_error.png").stat().st_size > 1000
