"""The LightningModule; it takes plain values only, saved in every checkpoint (docs/using-models.md)."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from nin_lightning import metric_names as names
from nin_lightning import optim, speed
from nin_lightning.config import ModelConfig, group_from_plain
from nin_lightning.errors import UserError
from nin_lightning.models import NiN
from nin_lightning.rundir.checkpoint_io import load_checkpoint_file
from nin_lightning.rundir.layout import CONFIG_KEY

# models.NiN's arguments, named as in the `model` config (ModelConfig): what run.build_model hands on.
NET_KEYS = ("num_classes", "in_channels", "preset", "width", "dropout", "batch_norm", "init", "init_std",
            "final_relu")
LOAD_FIX = "pass a checkpoint that a nin-lightning run wrote (RUN_DIR/checkpoints/best.ckpt or last.ckpt)"


class NiNClassifier(L.LightningModule):
    """Image classification with cross-entropy (label smoothing), top-1 and (for > 10 classes) top-5."""

    def __init__(
        self, num_classes: int, in_channels: int, preset: str, *,
        label_smoothing: float = ModelConfig.label_smoothing,
        optimizer: dict[str, Any] | None = None, scheduler: dict[str, Any] | None = None,
        tta: bool = False, channels_last: bool = False, compile: bool = False, compile_backend: str = "inductor",
        optimizer_impl: str | None = None, dataset: dict[str, Any] | None = None,
        class_names: list[str] | None = None, run_config: dict[str, Any] | None = None, **net: Any,
    ) -> None:
        """NET: models.NiN's other arguments; `optimizer`, `scheduler`: config groups as plain dicts (None: SGD,
        a constant LR); `run_config`: what a checkpoint records for resume's checks, not a hyperparameter."""
        super().__init__()
        # logger=False: the loggers get the whole resolved config already (tracking/wandb_run.py), as in the YAML
        self.save_hyperparameters(ignore=["run_config"], logger=False)
        self.net = speed.prepare_model(NiN(num_classes, in_channels, preset, **net), channels_last=channels_last,
                                       compile=compile, backend=compile_backend)
        self.tta = tta  # evaluation averages the logits of each image and its mirror (dataset.tta)
        self.channels_last = channels_last  # inputs in NHWC, like the weights (model.channels_last)
        self.run_config = run_config  # resolved model/dataset config, stored in checkpoints (rundir/start.py)
        self.optimizer_cfg = group_from_plain("optimizer", optimizer or {"name": "sgd"})
        self.optimizer_impl = optimizer_impl  # fused / foreach / for_loop (speed.SpeedPlan)
        self.scheduler_cfg = group_from_plain("scheduler", scheduler or {"name": "constant"})
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.top5 = names.has_top5(num_classes)
        top_k = {"acc": 1, "acc5": 5} if self.top5 else {"acc": 1}
        # validate_args=False: the inputs are our own logits and labels, and the checks sync the GPU
        self.metrics = nn.ModuleDict({
            f"{stage}_{name}": MulticlassAccuracy(num_classes, top_k=k, average="micro", validate_args=False)
            for name, k in top_k.items() for stage in (names.TRAIN, names.VAL, names.TEST)})
        self.train_loss = MeanMetric(nan_strategy="disable")  # FiniteLossGuard stops on a NaN loss
        self._train_metrics_logged = False
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # survives a resume
        self._planned_schedule: dict[str, Any] | None = None
        self._planned_groups: list[dict[str, Any]] | None = None
        self.trained_epochs: int | None = None  # of the checkpoint it was loaded from (Lightning's epoch + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation logits: with TTA, the mean over the image and its horizontal mirror."""
        logits = self(x)
        return 0.5 * (logits + self(x.flip(-1))) if self.tta else logits

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        """Evaluation (val or test): loss and accuracies. The logits go to the callbacks' `on_*_batch_end`."""
        images, labels = batch
        # a compiled model gets evaluation batches padded to one size (data/base.py pad_batch): the labels are
        # the real images', so the padding's outputs are cut off here, by a length known on the host
        logits = self.evaluate(images)[: len(labels)]
        loss = self.loss(logits, labels)
        # validation's epoch metrics reach the loggers in one row with training's (callbacks.EpochHistory)
        to_logger = stage == names.TEST
        self.log(names.loss(stage), loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 logger=to_logger, batch_size=len(labels))
        self._update_accuracies(stage, logits, labels)
        self._log_accuracies(stage, logger=to_logger)
        return logits

    def _update_accuracies(self, stage: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        for key, metric in self.metrics.items():
            if key.startswith(f"{stage}_"):
                metric.update(logits.detach(), labels)

    def _log_accuracies(self, stage: str, logger: bool) -> None:
        """Top-1 and (for > 10 classes) top-5 accuracy, which Lightning computes and resets at the epoch's end."""
        self.log(names.acc(stage), self.metrics[f"{stage}_acc"], on_step=False, on_epoch=True, prog_bar=True,
                 logger=logger)
        if self.top5:
            self.log(names.acc5(stage), self.metrics[f"{stage}_acc5"], on_step=False, on_epoch=True, logger=logger)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Loss; the epoch metrics are torchmetrics objects handed to Lightning once per epoch, and the step loss is
        logged at the logger's steps only: each `self.log` costs 1-3 ms of Python (benchmarks/overhead.py)."""
        images, labels = batch
        logits = self(images)
        loss = self.loss(logits, labels)
        self._update_accuracies(names.TRAIN, logits, labels)
        self.train_loss.update(loss.detach())
        if not self._train_metrics_logged:  # logger=False: one row per epoch (callbacks.EpochHistory)
            self._log_accuracies(names.TRAIN, logger=False)
            self.log(names.TRAIN_LOSS, self.train_loss, on_step=False, on_epoch=True, logger=False)
            self._train_metrics_logged = True
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # the logger's steps (as Lightning's own)
            # not prog_bar: that would be a host sync per step; the bars read it at these steps (callbacks/progress.py)
            self.log(names.LOSS_STEP, loss, on_step=True, on_epoch=False, sync_dist=True)
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_metrics_logged = False

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, names.VAL)

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, names.TEST)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Evaluation logits (TTA as at test time) of a batch of images, or of (images, labels)."""
        images = batch[0] if isinstance(batch, tuple | list) else batch
        return self.evaluate(images)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.metrics["val_acc"].compute())
        self.log(names.VAL_ACC_BEST, self.val_acc_best.compute(), prog_bar=True, sync_dist=True, logger=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the run's model/dataset config, so that a resume with a different one is refused."""
        if self.run_config:
            checkpoint[CONFIG_KEY] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A model loaded without a run takes the checkpoint's record; a resumed run keeps its own (what it is now)."""
        if self.run_config is None:
            self.run_config = checkpoint.get(CONFIG_KEY)
        epoch = checkpoint.get("epoch")  # 0-based, of the epoch that saved it; the console counts from 1
        self.trained_epochs = None if epoch is None else int(epoch) + 1

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path | IO[bytes], map_location: Any = None, hparams_file: str | Path | None = None,
        strict: bool | None = None, weights_only: bool | None = True, **kwargs: Any,
    ) -> NiNClassifier:
        """Lightning's `load_from_checkpoint` (`weights_only=True`), also for checkpoints from before the
        hyperparameters were saved (`nin_config`); a file that is neither gives a one-line UserError."""
        legacy: dict[str, Any] = {}
        if isinstance(checkpoint_path, str | Path) and Path(checkpoint_path).is_file():
            path = Path(checkpoint_path)
            checkpoint = load_checkpoint_file(path, fix=LOAD_FIX)  # one line for a truncated or foreign file
            if hparams_file is None and not checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY):
                legacy = hparams_from_record(checkpoint, path)
        try:
            return super().load_from_checkpoint(checkpoint_path, map_location=map_location, hparams_file=hparams_file,
                                                strict=strict, weights_only=weights_only, **(legacy | kwargs))
        except RuntimeError as exc:
            if "Error(s) in loading state_dict" not in str(exc):
                raise
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise UserError(f"{checkpoint_path}: its weights do not fit the NiN its hyperparameters describe "
                            f"({first[:160]}); {LOAD_FIX}") from exc

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        super().lr_scheduler_step(scheduler, metric)
        if getattr(scheduler, "exhausted", False):  # optim.LimitedPlateau: no LR cut left, training is over
            self.trainer.should_stop = True

    def configure_optimizers(self) -> Any:
        world = self.trainer.world_size if self.optimizer_cfg.scale_lr_with_world_size else 1
        optimizer = optim.build_optimizer(self.net, self.optimizer_cfg, lr=self.optimizer_cfg.lr * world,
                                          implementation=self.optimizer_impl)
        scheduler = optim.build_scheduler(optimizer, self.scheduler_cfg, self.trainer.max_epochs or 1,
                                          int(self.trainer.estimated_stepping_batches))
        self._planned_groups = optim.planned_groups(optimizer)
        if scheduler is None:
            return optimizer
        self._planned_schedule = optim.planned_state(scheduler["scheduler"])
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_train_start(self) -> None:
        """After Lightning restored a checkpoint: the optimizer's settings and the LR schedule follow the current
        config; only the schedule's position, a plateau's cuts and the momentum buffers are the checkpoint's."""
        if self._planned_groups is None or not self.trainer.optimizers:
            return
        scheduler = self.trainer.lr_scheduler_configs[0].scheduler if self.trainer.lr_scheduler_configs else None
        optim.keep_settings(self.trainer.optimizers[0], self._planned_groups, scheduler)
        if self._planned_schedule is not None and scheduler is not None:
            optim.keep_plan(scheduler, self._planned_schedule)


def hparams_from_record(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """The constructor's arguments for a checkpoint written before they were saved, from its `nin_config`
    (optimizer and scheduler by name with their defaults; `auto` speed switches as on this machine)."""
    record = checkpoint.get(CONFIG_KEY)
    model = record.get("model") if isinstance(record, dict) else None
    dataset = record.get("dataset") if isinstance(record, dict) else None
    if not isinstance(model, dict) or not isinstance(dataset, dict) or "num_classes" not in model:
        raise UserError(f"{path} holds neither hyperparameters nor the model config that nin-lightning records "
                        f"({CONFIG_KEY}), so its model cannot be rebuilt; {LOAD_FIX}")
    channels_last, _ = speed.resolve_channels_last(model.get("channels_last", "auto"), speed.target_device("auto"))
    tta = speed.resolve_tta(dataset.get("tta", "auto"), str(dataset.get("name")), bool(dataset.get("flip", False)))
    return {**{k: model[k] for k in NET_KEYS if k in model},
            "label_smoothing": model.get("label_smoothing", ModelConfig.label_smoothing),
            "optimizer": {"name": record.get("optimizer") or "sgd"},
            "scheduler": {"name": record.get("scheduler") or "constant"},
            "tta": tta, "channels_last": channels_last, "dataset": dataset}
