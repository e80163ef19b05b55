"""The schemas in Hydra's ConfigStore, and every key they define (for 'did you mean' hints): one table."""

from __future__ import annotations

import functools
from dataclasses import fields, is_dataclass
from typing import get_type_hints

from nin_lightning.config.schema import (
    AdamWConfig,
    CallbacksConfig,
    ConstantConfig,
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

# (group, name in the ConfigStore) -> schema. A group's YAML files extend one of these via their defaults
# list; Hydra's `--help` hides them (conf/hydra/help). The root config is `train_schema`.
SCHEMAS: dict[tuple[str | None, str], type] = {
    (None, "train_schema"): TrainConfig,
    ("dataset", "dataset_schema"): DatasetConfig,
    ("model", "model_schema"): ModelConfig,
    ("optimizer", "sgd_schema"): SGDConfig,
    ("optimizer", "adamw_schema"): AdamWConfig,
    ("scheduler", "multistep_schema"): MultiStepConfig,
    ("scheduler", "cosine_schema"): CosineConfig,
    ("scheduler", "onecycle_schema"): OneCycleConfig,
    ("scheduler", "plateau_schema"): PlateauConfig,
    ("scheduler", "constant_schema"): ConstantConfig,
    ("scheduler", "piecewise_schema"): PiecewiseConfig,
    ("trainer", "trainer_schema"): TrainerConfig,
    ("logger", "logger_schema"): LoggerConfig,
    ("callbacks", "callbacks_schema"): CallbacksConfig,
}


def register_configs() -> None:
    """Put every schema in Hydra's ConfigStore, and register the resolvers conf/ uses."""
    from hydra.core.config_store import ConfigStore

    from nin_lightning.config.sweep import register_resolvers

    register_resolvers()

    store = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        store.store(group=group, name=name, node=node)


def _keys(schema: type, prefix: str = "") -> list[str]:
    out = []
    hints = get_type_hints(schema)
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        out.append(key)
        if isinstance(hints[f.name], type) and is_dataclass(hints[f.name]):
            out += _keys(hints[f.name], key + ".")
    return out


@functools.cache
def known_keys() -> tuple[str, ...]:
    """Every dotted key any schema defines."""
    keys: set[str] = set()
    for (group, _), schema in SCHEMAS.items():
        keys.update(_keys(schema, f"{group}." if group else ""))
    return tuple(sorted(keys))
