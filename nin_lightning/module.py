"""The LightningModule: loss, metrics, optimizer and scheduler. Mechanics live in the Trainer."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from nin_lightning import metric_names as names
from nin_lightning.config import OptimizerConfig, SchedulerConfig
from nin_lightning.optim import build_optimizer, build_scheduler, keep_plan, planned_state
from nin_lightning.rundir.start import CONFIG_KEY


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
        tta: bool = False,
        channels_last: bool = False,
        optimizer_impl: str | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.tta = tta  # evaluation averages the logits of each image and its mirror (dataset.tta)
        self.channels_last = channels_last  # inputs in NHWC, like the weights (model.channels_last)
        self.run_config = run_config  # resolved model/dataset config, stored in checkpoints (resume.py)
        self.optimizer_cfg = optimizer
        self.optimizer_impl = optimizer_impl  # fused / foreach / for_loop (speed.SpeedPlan)
        self.scheduler_cfg = scheduler
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.top5 = names.has_top5(num_classes)
        stages = (names.TRAIN, names.VAL, names.TEST)
        # validate_args=False: the inputs are our own logits and labels, and the checks sync the GPU
        self.metrics = nn.ModuleDict({f"{stage}_acc": MulticlassAccuracy(num_classes, top_k=1, average="micro",
                                                                         validate_args=False) for stage in stages})
        if self.top5:
            for stage in stages:
                self.metrics[f"{stage}_acc5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro",
                                                                   validate_args=False)
        self.train_loss = MeanMetric(nan_strategy="disable")  # FiniteLossGuard stops on a NaN loss
        self._train_metrics_logged = False
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # survives a resume
        self._planned_schedule: dict[str, Any] | None = None
        self._constant_lrs: list[float] | None = None  # scheduler=constant: each param group's LR

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation logits: with TTA, the mean over the image and its horizontal mirror."""
        logits = self(x)
        return 0.5 * (logits + self(x.flip(-1))) if self.tta else logits

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        """Evaluation (val or test): loss, top-1 and, for > 10 classes, top-5 accuracy."""
        images, labels = batch
        # a compiled model gets evaluation batches padded to one size (data/base.py pad_batch): the labels are
        # the real images', so the padding's outputs are cut off here, by a length known on the host
        logits = self.evaluate(images)[: len(labels)]
        loss = self.loss(logits, labels)
        # sync_dist: under DDP the logged loss is the mean over all ranks (accuracies sync in torchmetrics)
        # Validation's epoch metrics reach the loggers in one row with training's (callbacks.EpochHistory);
        # the test's are one row of their own, which Lightning logs (and trainer.test returns).
        to_logger = stage == names.TEST
        self.log(names.loss(stage), loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 logger=to_logger, batch_size=len(labels))
        acc = self.metrics[f"{stage}_acc"]
        acc(logits, labels)
        self.log(names.acc(stage), acc, on_step=False, on_epoch=True, prog_bar=True, logger=to_logger)
        if self.top5:
            acc5 = self.metrics[f"{stage}_acc5"]
            acc5(logits, labels)
            self.log(names.acc5(stage), acc5, on_step=False, on_epoch=True, logger=to_logger)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Loss; train/acc and train/loss_epoch accumulate on the device, train/loss_step at logging steps.

        Each `self.log` call costs Lightning 1-3 ms of Python (it moves and copies its result records),
        which on a small model is several % of a step (benchmarks/overhead.py). So the epoch metrics are
        torchmetrics objects handed to Lightning once per epoch (it computes, syncs and resets them at the
        epoch's end), and the step loss is logged only when the logger records it (log_every_n_steps).
        """
        images, labels = batch
        logits = self(images)
        loss = self.loss(logits, labels)
        self.metrics["train_acc"].update(logits.detach(), labels)
        if self.top5:
            self.metrics["train_acc5"].update(logits.detach(), labels)
        self.train_loss.update(loss.detach())
        if not self._train_metrics_logged:  # logger=False: one row per epoch (callbacks.EpochHistory)
            self.log(names.acc(names.TRAIN), self.metrics["train_acc"], on_step=False, on_epoch=True, prog_bar=True,
                     logger=False)
            if self.top5:
                self.log(names.acc5(names.TRAIN), self.metrics["train_acc5"], on_step=False, on_epoch=True,
                         logger=False)
            self.log(names.TRAIN_LOSS, self.train_loss, on_step=False, on_epoch=True, logger=False)
            self._train_metrics_logged = True
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # the logger's steps (as Lightning's own)
            # sync_dist: under DDP the logged loss is the mean over all ranks. Not prog_bar: Lightning turns a
            # progress-bar value into a float after EVERY later batch (a host sync per step); the bars read it
            # at the logger's steps instead (callbacks/progress.py)
            self.log(names.LOSS_STEP, loss, on_step=True, on_epoch=False, sync_dist=True)
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_metrics_logged = False

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, names.VAL)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, names.TEST)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.metrics["val_acc"].compute())
        self.log(names.VAL_ACC_BEST, self.val_acc_best.compute(), prog_bar=True, sync_dist=True, logger=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the run's model/dataset config, so that a resume with a different one is refused."""
        if self.run_config:
            checkpoint[CONFIG_KEY] = self.run_config

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        super().lr_scheduler_step(scheduler, metric)
        if getattr(scheduler, "exhausted", False):  # optim.LimitedPlateau: no LR cut left, training is over
            self.trainer.should_stop = True

    def configure_optimizers(self) -> Any:
        world = self.trainer.world_size if self.optimizer_cfg.scale_lr_with_world_size else 1
        optimizer = build_optimizer(self.net, self.optimizer_cfg, lr=self.optimizer_cfg.lr * world,
                                    implementation=self.optimizer_impl)
        scheduler = build_scheduler(
            optimizer, self.scheduler_cfg, self.trainer.max_epochs or 1, int(self.trainer.estimated_stepping_batches)
        )
        if scheduler is None:
            self._constant_lrs = [group["lr"] for group in optimizer.param_groups]
            return optimizer
        self._planned_schedule = planned_state(scheduler["scheduler"])
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_train_start(self) -> None:
        """After Lightning restored a checkpoint: the LR schedule follows the current config (optim.keep_plan)."""
        if self._planned_schedule is not None and self.trainer.lr_scheduler_configs:
            keep_plan(self.trainer.lr_scheduler_configs[0].scheduler, self._planned_schedule)
        elif self._constant_lrs is not None:  # scheduler=constant: the LR is the config's, not the checkpoint's
            for group, lr in zip(self.trainer.optimizers[0].param_groups, self._constant_lrs, strict=True):
                group["lr"] = lr
