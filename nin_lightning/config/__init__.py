"""Typed configuration: the schemas (schema.py), their ConfigStore entries and validation (store.py), a sweep's
names (sweep.py) and the job's context. Values only; nothing here imports torch or Lightning."""

from dataclasses import dataclass, field
from pathlib import Path

from nin_lightning.config.schema import (
    DATASETS,
    DIGIT_DATASETS,
    AdamWConfig,
    CallbacksConfig,
    CosineConfig,
    DatasetConfig,
    LoggerConfig,
    ModelConfig,
    MultiStepConfig,
    OneCycleConfig,
    PiecewiseConfig,
    PlateauConfig,
    SGDConfig,
    TrainConfig,
    TrainerConfig,
)
from nin_lightning.config.store import (
    from_plain,
    group_from_plain,
    known_keys,
    register_configs,
    surprises,
    to_plain_dict,
    unknown_key,
    validate,
)

__all__ = ["DATASETS", "DIGIT_DATASETS", "AdamWConfig", "CallbacksConfig", "CosineConfig", "DatasetConfig",
           "JobContext", "LoggerConfig", "ModelConfig", "MultiStepConfig", "OneCycleConfig", "PiecewiseConfig",
           "PlateauConfig", "SGDConfig", "TrainConfig", "TrainerConfig", "from_plain", "group_from_plain", "known_keys",
           "register_configs", "surprises", "to_plain_dict", "unknown_key", "validate"]


@dataclass(frozen=True)
class JobContext:
    """One job of a run or of a sweep, read once from Hydra's runtime (cli/hydra_job.py); without Hydra (a notebook,
    a test), `JobContext(run_dir=Path(...))` is all `run.train` needs."""

    run_dir: Path | None = None  # where the job writes (Hydra's output dir); None: outputs/run
    multirun: bool = False  # one job of a `-m` sweep
    shares_process: bool = False  # the sweep's other jobs run in this process too (Hydra's basic launcher)
    group: str | None = None  # the sweep's name: the W&B group of its jobs
    name: str | None = None  # its W&B run name: a sweep job's swept keys, a single run's overrides, as one string
    swept: tuple[str, ...] = ()  # a sweep's swept keys, short (dropout, seed): its jobs' W&B tags
    choices: dict[str, str] = field(default_factory=dict)  # Hydra's group choices (experiment=quickstart, ...)
    trainer_option: str | None = None  # `trainer=` as chosen (gpu, ddp, ...): named in device errors
    run_dir_pinned: bool = True  # False: the default per-process timestamp dir (not shared by Slurm tasks)
    overrides: tuple[str, ...] = ()  # the job's command-line overrides
    hydra_files: dict[str, str] = field(default_factory=dict)  # RUN_DIR/.hydra/NAME -> text, written at start
    rerun: tuple[str, ...] = ()  # argv that runs this job again as a single run (DDP ranks under -m)
    cwd: Path | None = None  # the directory to run `rerun` in
    made: Path | None = None  # the outermost dir the command made for this job (a refused start removes it)
