"""Every experiment preset runs one short epoch end to end on tiny files in its dataset's real format.

(Composition and validation of every preset are in test_config.py.) The presets are run as written,
shrunk only in data size, batch size and batch counts; mnist_reference also draws its test-error plot.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nin_lightning.config import JobContext
from tests import fake_data as fd
from tests.conftest import lr_trace

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
    train(cfg, JobContext(run_dir=run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 1
    assert 0.0 <= metrics["test/acc"] <= 1.0
    if cfg.callbacks.test_curve:
        assert (run_dir / "test_curve.csv").read_text().count("\n") == 2  # header + one epoch
        assert (run_dir / "test_error.png").stat().st_size > 1000


def _lr_by_epoch(conf, epochs: int) -> list[float]:
    from torch import nn

    from nin_lightning.optim import build_optimizer, build_scheduler

    opt = build_optimizer(nn.Linear(2, 2), conf.optimizer, lr=conf.optimizer.lr)
    return lr_trace(build_scheduler(opt, conf.scheduler, epochs, epochs)["scheduler"], opt, epochs)


def test_reference_presets_hold_their_recipes(compose_cfg):
    from nin_lightning.config import validate

    keras = validate(compose_cfg("experiment=keras_cifar10"))
    o, d = keras.optimizer, keras.dataset
    assert (o.lr, o.momentum, o.nesterov, o.weight_decay, o.exempt_bias_norm) == (0.01, 0.9, True, 2e-4, True)
    assert (d.batch_size, d.crop_padding, d.padding_mode, d.flip) == (128, 4, "zero", True)
    assert keras.trainer.max_epochs == 200
    lr = _lr_by_epoch(keras, 200)  # 0.01, 0.005 after epoch 80, 0.001 after epoch 140
    assert [round(lr[e], 6) for e in (0, 80, 81, 140, 141, 199)] == [0.01, 0.01, 0.005, 0.005, 0.001, 0.001]

    ref = validate(compose_cfg("experiment=mnist_reference"))
    o, m, s = ref.optimizer, ref.model, ref.scheduler
    assert (o.name, o.lr, o.momentum, o.weight_decay, ref.dataset.batch_size) == ("sgd", 0.01, 0.9, 1e-5, 128)
    assert (m.init, m.init_std, m.final_relu, m.batch_norm) == ("normal", 0.05, False, False)
    assert (ref.dataset.mean, ref.dataset.std) == ([0.5], [0.5])  # inputs in [-1, 1]
    assert (s.name, s.monitor, s.stop_below_ratio) == ("plateau", "train/acc", 0.01) and ref.callbacks.test_curve

    for name in ("paper_cifar10", "paper_svhn", "paper_mnist", "paper_cifar100"):
        paper = validate(compose_cfg(f"experiment={name}"))
        o, s = paper.optimizer, paper.scheduler
        assert paper.model.dropout == 0.5 and not paper.model.batch_norm and paper.trainer.precision == "32-true"
        assert (o.name, o.momentum) == ("sgd", 0.9)
        assert (s.name, s.monitor, s.factor, s.max_reductions) == ("plateau", "train/acc", 0.1, 2)
        if name != "paper_cifar100":  # CIFAR-100's own cuda-convnet params: lr 0.02, wd 5e-4 (its header)
            assert (o.lr, o.weight_decay) == (0.1, 1e-4)
    assert validate(compose_cfg("experiment=paper_cifar10")).dataset.preprocess == "gcn_zca"
    assert validate(compose_cfg("experiment=paper_svhn")).dataset.split == "train+extra"
