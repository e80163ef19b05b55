"""Typed configuration: the schemas (schema.py), their ConfigStore entries (store.py), validation
(validate.py) and the job's context (job.py). Values only; nothing here imports torch or Lightning."""

from nin_lightning.config.job import JobContext
from nin_lightning.config.schema import (
    DATASETS,
    DIGIT_DATASETS,
    OPTIMIZER_IMPLEMENTATIONS,
    AdamWConfig,
    CallbacksConfig,
    ConstantConfig,
    CosineConfig,
    DatasetConfig,
    LoggerConfig,
    ModelConfig,
    MultiStepConfig,
    OneCycleConfig,
    OptimizerConfig,
    PiecewiseConfig,
    PlateauConfig,
    SchedulerConfig,
    SGDConfig,
    TrainConfig,
    TrainerConfig,
)
from nin_lightning.config.store import from_plain, group_from_plain, known_keys, register_configs, unknown_key
from nin_lightning.config.validate import surprises, to_plain_dict, validate

__all__ = [
    "DATASETS",
    "DIGIT_DATASETS",
    "OPTIMIZER_IMPLEMENTATIONS",
    "AdamWConfig",
    "CallbacksConfig",
    "ConstantConfig",
    "CosineConfig",
    "DatasetConfig",
    "JobContext",
    "LoggerConfig",
    "ModelConfig",
    "MultiStepConfig",
    "OneCycleConfig",
    "OptimizerConfig",
    "PiecewiseConfig",
    "PlateauConfig",
    "SGDConfig",
    "SchedulerConfig",
    "TrainConfig",
    "TrainerConfig",
    "from_plain",
    "group_from_plain",
    "known_keys",
    "register_configs",
    "surprises",
    "to_plain_dict",
    "unknown_key",
    "validate",
]
