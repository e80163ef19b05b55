"""The LightningModule: loss, metrics, optimizer and scheduler. Mechanics live in the Trainer."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from nin_lightning.config import OptimizerConfig, SchedulerConfig
from nin_lightning.optim import build_optimizer, build_scheduler


class NiNClassifier(L.LightningModule):
    """Image classification with cross-entropy (label smoothing), top-1 and (for > 10 classes) top-5."""

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        label_smoothing: float = 0.0,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.run_config = run_config  # resolved model/dataset config, stored in checkpoints (resume.py)
        self.optimizer_cfg = optimizer
        self.scheduler_cfg = scheduler
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.top5 = num_classes > 10
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_acc": MulticlassAccuracy(num_classes, top_k=1, average="micro")
                for stage in ("train", "val", "test")
            }
        )
        if self.top5:
            for stage in ("val", "test"):
                self.metrics[f"{stage}_acc5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # survives a resume

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.loss(logits, labels)
        on_step = stage == "train"
        # sync_dist: under DDP the logged loss is the mean over all ranks (accuracies sync in torchmetrics)
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=True)
        acc = self.metrics[f"{stage}_acc"]
        acc(logits, labels)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        if self.top5 and stage != "train":
            acc5 = self.metrics[f"{stage}_acc5"]
            acc5(logits, labels)
            self.log(f"{stage}/acc5", acc5, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.metrics["val_acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the run's model/dataset config, so that a resume with a different one is refused."""
        if self.run_config:
            checkpoint["nin_config"] = self.run_config

    def configure_optimizers(self) -> Any:
        world = self.trainer.world_size if self.optimizer_cfg.scale_lr_with_world_size else 1
        optimizer = build_optimizer(self.net, self.optimizer_cfg, lr=self.optimizer_cfg.lr * world)
        scheduler = build_scheduler(
            optimizer, self.scheduler_cfg, self.trainer.max_epochs or 1, int(self.trainer.estimated_stepping_batches)
        )
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
