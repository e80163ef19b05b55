"""Typed config schemas: Hydra checks keys and types as it composes; `__post_init__` checks ranges and rules."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from omegaconf import II, MISSING

from nin_lightning import metric_names
from nin_lightning.errors import UserError, did_you_mean


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise UserError(f"{key}={value!r} is out of range: expected {expected}; fix it with {key}=<value>")


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{key}={value!r} is not a valid choice{did_you_mean(str(value), list(choices))}; "
                        f"choose one of: {', '.join(choices)}")


def _auto_or_bool(key: str, value: Any) -> None:
    """Speed switches (nin_lightning/speed.py): `auto` picks per device; true/false force it."""
    _check(value == "auto" or isinstance(value, bool), key, value, "auto, true or false")


def _at_least(group: str, low: float, expected: str, **values: Any) -> None:
    for name, value in values.items():
        _check(value >= low, f"{group}.{name}", value, f"{expected} >= {low}")


def _milestones(milestones: list[int]) -> None:
    _check(list(milestones) == sorted(set(milestones)) and all(m > 0 for m in milestones),
           "scheduler.milestones", milestones, "increasing epochs > 0")


# Every dataset: its name (dataset=NAME) -> its LightningDataModule ("module:Class"), imported lazily by
# nin_lightning.data so that `digits` never imports torchvision.
DATASETS = {
    "digits": "nin_lightning.data.digits:DigitsDataModule",
    "mnist": "nin_lightning.data.mnist:MNISTDataModule",
    "cifar10": "nin_lightning.data.cifar:CIFAR10DataModule",
    "cifar100": "nin_lightning.data.cifar:CIFAR100DataModule",
    "svhn": "nin_lightning.data.svhn:SVHNDataModule",
}
DIGIT_DATASETS = frozenset({"digits", "mnist", "svhn"})  # a mirrored digit is another digit or none
# torch.optim's implementations (optimizer.implementation; `auto`: the fastest the device has, speed.py)
OPTIMIZER_IMPLEMENTATIONS = ("fused", "foreach", "for_loop")


def is_val_size(value: Any) -> bool:
    """Whether VALUE is a valid `dataset.val_size`: an int >= 0 (not a bool) or a float with 0 < x < 1."""
    if isinstance(value, bool):
        return False
    return (isinstance(value, int) and value >= 0) or (isinstance(value, float) and 0.0 < value < 1.0)


@dataclass
class DatasetConfig:
    """Which data, where it lives, how it is split, batched and augmented."""

    name: str = MISSING
    root: str = "${oc.env:NIN_DATA_ROOT,data}"
    download: bool = False
    batch_size: int = 128
    eval_batch_size: int = 512
    val_size: Any = 0.1  # a count of training images (an int), or a fraction of them (a float, 0 < x < 1)
    split_seed: int = 0
    split: str = "train"
    num_workers: int = 0
    num_classes: int = MISSING
    in_channels: int = MISSING
    image_size: int = MISSING
    preset: str = MISSING
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    crop_padding: int = 0
    padding_mode: str = "zero"
    flip: bool = False
    cutout: int = 0
    preprocess: str = "none"
    tta: Any = "auto"
    device_resident: Any = "auto"

    def __post_init__(self) -> None:
        _choice("dataset.name", self.name, tuple(DATASETS))
        _at_least("dataset", 1, "an integer", batch_size=self.batch_size, eval_batch_size=self.eval_batch_size)
        for key, size in (("batch_size", self.batch_size), ("eval_batch_size", self.eval_batch_size)):
            _check(size < 2**31, f"dataset.{key}", size, "an integer below 2**31")
        _check(is_val_size(self.val_size), "dataset.val_size", self.val_size,
               "a count (an integer >= 0) or a fraction of the training images (a number with 0 < x < 1, e.g. 0.1)")
        _at_least("dataset", 0, "an integer", num_workers=self.num_workers, crop_padding=self.crop_padding,
                  cutout=self.cutout)
        _choice("dataset.padding_mode", self.padding_mode, ("zero", "reflect"))
        _choice("dataset.preprocess", self.preprocess, ("none", "gcn_zca"))
        _choice("dataset.split", self.split, ("train", "train+extra"))
        _auto_or_bool("dataset.tta", self.tta)
        _auto_or_bool("dataset.device_resident", self.device_resident)
        if self.tta is True and self.name in DIGIT_DATASETS:
            raise UserError(f"dataset.tta=true: {self.name} holds digits, which a mirror image turns into other "
                            "digits or none; pass dataset.tta=false (or auto)")
        _check(len(self.mean) == len(self.std) == self.in_channels, "dataset.mean/std", self.mean,
               f"{self.in_channels} values each")


@dataclass
class ModelConfig:
    """NiN: widths follow the dataset's preset; `width` multiplies every hidden width."""

    preset: str = II("dataset.preset")
    num_classes: int = II("dataset.num_classes")
    in_channels: int = II("dataset.in_channels")
    width: float = 1.0
    dropout: float = 0.5
    batch_norm: bool = True
    init: str = "kaiming"
    init_std: float = 0.05
    final_relu: bool = True
    label_smoothing: float = 0.0
    channels_last: Any = "auto"
    compile: Any = "auto"
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        _check(0.0 <= self.label_smoothing < 1.0, "model.label_smoothing", self.label_smoothing, "0 <= x < 1")
        _choice("model.preset", self.preset, ("cifar", "svhn", "mnist"))
        _check(self.width > 0, "model.width", self.width, "a number > 0")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "0 <= dropout < 1")
        _choice("model.init", self.init, ("normal", "kaiming"))
        _check(self.init_std > 0, "model.init_std", self.init_std, "a number > 0")
        _auto_or_bool("model.channels_last", self.channels_last)
        _auto_or_bool("model.compile", self.compile)


@dataclass
class OptimizerConfig:
    """Shared optimizer knobs; `exempt_bias_norm` removes weight decay from biases and norms."""

    name: str = MISSING
    lr: float = 0.1
    weight_decay: float = 1e-4
    exempt_bias_norm: bool = False
    scale_lr_with_world_size: bool = False
    implementation: str = "auto"

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optimizer.lr", self.lr, "a number > 0")
        _check(self.weight_decay >= 0, "optimizer.weight_decay", self.weight_decay, "a number >= 0")
        _choice("optimizer.implementation", self.implementation, ("auto", *OPTIMIZER_IMPLEMENTATIONS))


@dataclass
class SGDConfig(OptimizerConfig):
    name: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0.0 <= self.momentum < 1.0, "optimizer.momentum", self.momentum, "0 <= momentum < 1")
        _check(not self.nesterov or self.momentum > 0, "optimizer.nesterov", self.nesterov,
               "false when momentum is 0")


@dataclass
class AdamWConfig(OptimizerConfig):
    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    exempt_bias_norm: bool = True
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optimizer.betas", self.betas,
               "two numbers in [0, 1)")


@dataclass
class SchedulerConfig:
    name: str = MISSING


@dataclass
class MultiStepConfig(SchedulerConfig):
    name: str = "multistep"
    milestones: list[int] = field(default_factory=lambda: [15, 25])
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _milestones(self.milestones)
        _check(0 < self.gamma < 1, "scheduler.gamma", self.gamma, "0 < gamma < 1")


@dataclass
class PiecewiseConfig(SchedulerConfig):
    """Piecewise-constant LR: optimizer.lr x scales[i] from epoch milestones[i-1] on (scales[0] before)."""

    name: str = "piecewise"
    milestones: list[int] = field(default_factory=lambda: [81, 141])
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.1])

    def __post_init__(self) -> None:
        _check(len(self.scales) == len(self.milestones) + 1, "scheduler.scales", self.scales,
               f"{len(self.milestones) + 1} values (one more than scheduler.milestones)")
        _milestones(self.milestones)
        _check(all(s > 0 for s in self.scales), "scheduler.scales", self.scales, "numbers > 0")


@dataclass
class CosineConfig(SchedulerConfig):
    name: str = "cosine"
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        _check(self.warmup_epochs >= 0, "scheduler.warmup_epochs", self.warmup_epochs, "a number >= 0")
        _check(0 <= self.min_lr_ratio < 1, "scheduler.min_lr_ratio", self.min_lr_ratio, "0 <= min_lr_ratio < 1")


@dataclass
class OneCycleConfig(SchedulerConfig):
    name: str = "onecycle"
    pct_start: float = 0.25
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def __post_init__(self) -> None:
        _check(0 < self.pct_start < 1, "scheduler.pct_start", self.pct_start, "0 < pct_start < 1")
        _at_least("scheduler", 1, "a number", div_factor=self.div_factor, final_div_factor=self.final_div_factor)


@dataclass
class PlateauConfig(SchedulerConfig):
    """The paper's rule: divide the LR by 1/factor when the monitored accuracy stops improving."""

    name: str = "plateau"
    monitor: str = "val/acc"
    factor: float = 0.1
    patience: int = 3
    threshold: float = 1e-3
    min_lr: float = 0.0
    stop_below_ratio: float | None = None
    max_reductions: int | None = None

    def __post_init__(self) -> None:
        _check(0 < self.factor < 1, "scheduler.factor", self.factor, "0 < factor < 1")
        _check(self.patience >= 0, "scheduler.patience", self.patience, "an integer >= 0")
        _check(self.max_reductions is None or self.max_reductions >= 0, "scheduler.max_reductions",
               self.max_reductions, "an integer >= 0, or null")
        _check(self.stop_below_ratio is None or 0 < self.stop_below_ratio < 1, "scheduler.stop_below_ratio",
               self.stop_below_ratio, "0 < stop_below_ratio < 1, or null")
        _check(self.min_lr >= 0, "scheduler.min_lr", self.min_lr, "a number >= 0")
        _choice("scheduler.monitor", self.monitor, tuple(metric_names.MONITOR_MODES))


@dataclass
class ConstantConfig(SchedulerConfig):
    name: str = "constant"


# `auto` (nin_lightning/speed.py picks per device) and Lightning's precision names.
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true",
              "transformer-engine", "transformer-engine-float16", "32", "16", "bf16", "64")


@dataclass
class TrainerConfig:
    """Keyword arguments of `lightning.Trainer`, under their own names."""

    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    max_epochs: int = 30
    precision: str = "auto"
    deterministic: bool = False
    benchmark: Any = "auto"
    sync_batchnorm: bool = False
    gradient_clip_val: float | None = None
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    num_sanity_val_steps: int = 2
    enable_progress_bar: bool = True
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None

    def __post_init__(self) -> None:
        _choice("trainer.accelerator", self.accelerator, ("auto", "cpu", "gpu", "cuda", "mps"))
        # -1 (Lightning's "no limit") is refused: the LR schedules, resume checks and a finished run need a last epoch
        _check(self.max_epochs >= 1, "trainer.max_epochs", self.max_epochs,
               "an integer >= 1 (a run needs a last epoch; -1, no limit, is not supported)")
        _choice("trainer.precision", str(self.precision), PRECISIONS)
        devices_ok = self.devices in ("auto", -1) or (isinstance(self.devices, int) and self.devices >= 1)
        _check(devices_ok, "trainer.devices", self.devices, "an integer >= 1, -1 or auto")
        _check(self.num_nodes >= 1, "trainer.num_nodes", self.num_nodes, "an integer >= 1")
        _check(self.benchmark in ("auto", None) or isinstance(self.benchmark, bool), "trainer.benchmark",
               self.benchmark, "auto, true, false or null")


# What W&B refuses in a project or entity name, and a tag's length (wandb.sdk.wandb_settings: validate_project,
# validate_run_tags): checked before a run dir exists, with the config's key or the variable named.
WANDB_FORBIDDEN = "/\\#?%:"
WANDB_NAME_MAX, WANDB_TAG_MAX = 128, 64
WANDB_MODES = ("online", "offline", "disabled", "shared", "dryrun", "run")  # WANDB_MODE (wandb_settings: mode)


def wandb_env_tags() -> list[str]:
    """WANDB_TAGS, comma-separated, as the SDK reads it (its items stripped; check_wandb_names refuses empty ones)."""
    return [tag.strip() for tag in os.environ.get("WANDB_TAGS", "").split(",") if tag.strip()]


def check_wandb_names(project: str | None, entity: str | None, tags: list[str]) -> None:
    """A one-line UserError for a project, entity or tag (the config's, else WANDB_*'s) W&B would refuse later."""
    for key, var, value in (("logger.project", "WANDB_PROJECT", project), ("logger.entity", "WANDB_ENTITY", entity)):
        source, value = (key, value) if value is not None else (var, os.environ.get(var))
        if value is None:
            continue
        bad = sorted({c for c in WANDB_FORBIDDEN if c in value})
        if bad or not value.strip() or len(value) > WANDB_NAME_MAX:
            raise UserError(f"{source}={value!r}: W&B refuses it (at most {WANDB_NAME_MAX} characters, none of "
                            f"{' '.join(WANDB_FORBIDDEN)}{'; found ' + ' '.join(bad) if bad else ''}); "
                            f"pass {key}=<name>")
    mode = os.environ.get("WANDB_MODE")
    if mode is not None and mode not in WANDB_MODES:
        raise UserError(f"WANDB_MODE={mode!r}: W&B takes {', '.join(WANDB_MODES)}; set one or unset it")
    raw = os.environ.get("WANDB_TAGS")
    if raw is not None and raw.strip() and not all(t.strip() for t in raw.split(",")):
        raise UserError(f"WANDB_TAGS={raw!r} has an empty tag (W&B refuses it); drop the extra comma")
    for source, tag in [*(("tags", t) for t in tags), *(("WANDB_TAGS", t) for t in wandb_env_tags())]:
        if not 1 <= len(str(tag)) <= WANDB_TAG_MAX:
            shown = repr(str(tag)) if len(str(tag)) <= 40 else repr(str(tag)[:40]) + "..."
            fix = "drop the empty tag" if not str(tag) else "shorten it"
            raise UserError(f"{source}: the tag {shown} has {len(str(tag))} characters; W&B takes 1 to "
                            f"{WANDB_TAG_MAX}; {fix}")


@dataclass
class LoggerConfig:
    """Experiment tracking: wandb (offline without a login), csv, or none."""

    name: str = MISSING
    project: str | None = None  # None: WANDB_PROJECT, else nin-lightning (tracking/wandb_env.py)
    entity: str | None = None  # None: WANDB_ENTITY, else the login's default entity
    mode: str = "auto"
    group: str | None = None
    job_type: str | None = None  # None: WANDB_JOB_TYPE, else train
    log_model: Any = False  # false | true (best.ckpt once, at the end) | all (every checkpoint as it is written)
    init_timeout_s: float = 60.0
    osh: bool = False  # offline runs: ask wandb-osh on a login node to `wandb sync` them after each epoch
    osh_dir: str | None = None  # wandb-osh's command dir, shared with the login node (None: its default)

    def __post_init__(self) -> None:
        _choice("logger.name", self.name, ("wandb", "csv", "none"))
        _choice("logger.mode", self.mode, ("auto", "online", "offline", "disabled"))
        _check(self.log_model in (True, False, "all"), "logger.log_model", self.log_model, "false, true or all")


@dataclass
class CallbacksConfig:
    """Checkpointing, LR logging, progress bar, per-epoch history, early stopping."""

    monitor: str = "val/acc"
    mode: str = "max"
    save_last: bool = True
    lr_monitor: bool = True
    rich_progress_bar: bool = True
    history: bool = True
    early_stopping_patience: int | None = None
    min_free_disk_gb: float = 1.0
    test_curve: bool = False
    check_every_n_steps: int = 10
    val_every_n_epochs: int = 1
    last_ckpt_every_n_minutes: float = 0.0

    def __post_init__(self) -> None:
        _choice("callbacks.mode", self.mode, ("max", "min"))
        _at_least("callbacks", 1, "an integer", check_every_n_steps=self.check_every_n_steps,
                  val_every_n_epochs=self.val_every_n_epochs)
        _check(self.last_ckpt_every_n_minutes >= 0, "callbacks.last_ckpt_every_n_minutes",
               self.last_ckpt_every_n_minutes, "a number >= 0 (0: after every epoch)")
        _choice("callbacks.monitor", self.monitor, tuple(metric_names.MONITOR_MODES))


@dataclass
class TrainConfig:
    """The whole run. Group nodes are typed by their group's base schema."""

    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    callbacks: CallbacksConfig = MISSING
    seed: int = 42
    resume: str = "never"
    ckpt_path: str | None = None
    tags: list[str] = field(default_factory=list)
    verbose: bool = False  # the console: the full config tree and Lightning's own lines too (train.log has all)
    compile_cache_dir: str = "outputs/compile_cache"

    def __post_init__(self) -> None:
        _choice("resume", self.resume, ("never", "auto"))
        if self.logger.name == "wandb":
            check_wandb_names(self.logger.project, self.logger.entity, list(self.tags))
        _check(0 <= self.seed < 2**32, "seed", self.seed, "an integer in [0, 2**32) (numpy's seed range)")
        monitors = {"callbacks.monitor": self.callbacks.monitor,
                    "scheduler.monitor": getattr(self.scheduler, "monitor", None)}
        for key, name in monitors.items():
            if self.dataset.val_size == 0 and name is not None and name.startswith(f"{metric_names.VAL}/"):
                raise UserError(f"dataset.val_size=0 leaves no validation set, but {key}={name} (checkpoints, "
                                f"early stopping or the LR plateau) follows it; pass {key}=train/acc, or "
                                "dataset.val_size=N")
        classes = self.dataset.num_classes
        logged = metric_names.monitorable(classes)
        for key, name in monitors.items():
            if name is not None and name not in logged:
                raise UserError(f"{key}={name}: {self.dataset.name} has {classes} classes, and top-5 accuracy is "
                                f"logged only with more than {metric_names.TOP5_FROM_CLASSES - 1}; choose one of: "
                                f"{', '.join(logged)}")
        if self.callbacks.val_every_n_epochs > 1 and self.trainer.check_val_every_n_epoch != 1:
            raise UserError(f"callbacks.val_every_n_epochs={self.callbacks.val_every_n_epochs} and "
                            f"trainer.check_val_every_n_epoch={self.trainer.check_val_every_n_epoch} both set how "
                            "often to validate; keep callbacks.val_every_n_epochs (it also validates the last epoch)")
        plateau_on = monitors["scheduler.monitor"]
        if self.callbacks.val_every_n_epochs > 1 and plateau_on is not None and plateau_on.startswith("val/"):
            raise UserError(f"scheduler.monitor={plateau_on} needs a validation after every epoch, and "
                            f"callbacks.val_every_n_epochs={self.callbacks.val_every_n_epochs} skips some; pass "
                            "callbacks.val_every_n_epochs=1 or scheduler.monitor=train/acc")
