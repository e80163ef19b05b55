"""The LightningModule's logged metrics: every name the config accepts as a monitor is really logged."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from nin_lightning import metric_names
from nin_lightning.config import validate
from nin_lightning.errors import UserError
from nin_lightning.module import NiNClassifier


class Noise(L.LightningDataModule):
    """A few random 32x32 images: enough for one logged epoch of every stage."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        images, labels = torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, classes, (32,), generator=g)
        self.data = TensorDataset(images, labels)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=16)

    val_dataloader = test_dataloader = train_dataloader


@pytest.mark.parametrize("classes", [10, 100])
def test_every_monitorable_name_is_logged(classes):
    module = NiNClassifier(classes, 3, "cifar", width=0.1, optimizer={"name": "sgd"}, scheduler={"name": "constant"})
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=Noise(classes))
    logged = set(trainer.callback_metrics)
    accepted = set(metric_names.monitorable(classes))
    assert accepted <= logged, accepted - logged
    assert set(metric_names.epoch_metrics("train", classes)) | set(metric_names.epoch_metrics("val", classes)) <= logged
    trainer.test(module, datamodule=Noise(classes), verbose=False)
    assert set(metric_names.epoch_metrics("test", classes)) <= set(trainer.callback_metrics)


@pytest.mark.parametrize(("dataset", "ok"), [("digits", False), ("cifar100", True)])
def test_top5_monitor_is_accepted_only_where_it_is_logged(compose_cfg, dataset, ok):
    cfg = compose_cfg(f"dataset={dataset}", "callbacks.monitor=val/acc5", "callbacks.mode=max")
    if ok:
        assert validate(cfg).callbacks.monitor == "val/acc5"
    else:
        with pytest.raises(UserError, match=r"callbacks.monitor=val/acc5: digits has 10 classes"):
            validate(cfg)


def test_a_misspelt_monitor_is_refused_at_start(compose_cfg):
    with pytest.raises(UserError, match=r"callbacks.monitor='val/acc_top5' is not a valid choice"):
        validate(compose_cfg("dataset=cifar100", "callbacks.monitor=val/acc_top5"))
