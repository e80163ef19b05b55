"""The schemas in Hydra's ConfigStore, and every key they define (for 'did you mean' hints): one table."""

from __future__ import annotations

import functools
from dataclasses import fields, is_dataclass
from typing import Any, get_type_hints

from nin_lightning.config import schema as schemas
from nin_lightning.errors import UserError, did_you_mean

# (group, name in the ConfigStore) -> schema. A group's YAML files extend one of these via their defaults
# list; Hydra's `--help` hides them (conf/hydra/help). The root config is `train_schema`.
SCHEMAS: dict[tuple[str | None, str], type] = {
    (None, "train_schema"): schemas.TrainConfig,
    ("dataset", "dataset_schema"): schemas.DatasetConfig,
    ("model", "model_schema"): schemas.ModelConfig,
    ("optimizer", "sgd_schema"): schemas.SGDConfig,
    ("optimizer", "adamw_schema"): schemas.AdamWConfig,
    ("scheduler", "multistep_schema"): schemas.MultiStepConfig,
    ("scheduler", "cosine_schema"): schemas.CosineConfig,
    ("scheduler", "onecycle_schema"): schemas.OneCycleConfig,
    ("scheduler", "plateau_schema"): schemas.PlateauConfig,
    ("scheduler", "constant_schema"): schemas.ConstantConfig,
    ("scheduler", "piecewise_schema"): schemas.PiecewiseConfig,
    ("trainer", "trainer_schema"): schemas.TrainerConfig,
    ("logger", "logger_schema"): schemas.LoggerConfig,
    ("callbacks", "callbacks_schema"): schemas.CallbacksConfig,
}


def register_configs() -> None:
    """Put every schema in Hydra's ConfigStore, and register the resolvers conf/ uses (config/sweep.py:
    `nin.sweep_name`, a sweep's name; `nin.job_dir`, a sweep job's dir name)."""
    from hydra.core.config_store import ConfigStore

    from nin_lightning.config.sweep import register_resolvers

    register_resolvers()

    store = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        store.store(group=group, name=name, node=node)
    _maximising_optuna(store)


def _maximising_optuna(store: Any) -> None:
    """`hydra/sweeper=optuna` maximises: train.py returns val/acc_best, and hydra-optuna-sweeper's own entry
    minimises, so an ad-hoc search without the ready preset would look for the worst model.

    Hydra's plugin scan (run once per process, `Plugins.instance()`) executes the plugin's config module,
    which stores its entry; the scan is run here first, then the entry is stored again with
    `direction: maximize` and every other key as the plugin has it (`hydra.sweeper.direction=minimize`
    still overrides it). A YAML of the same name cannot do this: Hydra refuses a YAML matched to a
    ConfigStore schema that has a defaults list."""
    from hydra.core.plugins import Plugins

    Plugins.instance()
    try:
        entry = store.load("hydra/sweeper/optuna.yaml")
    except Exception:  # hydra-optuna-sweeper not installed: hydra/sweeper=optuna fails as Hydra says
        return
    node = entry.node
    node.direction = "maximize"
    store.store(group="hydra/sweeper", name="optuna", node=node, provider=entry.provider)


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


def unknown_key(key: str) -> str:
    """The one-line error for KEY, which the composed config lacks: the group options that do define it (a
    key of `scheduler=multistep` while cosine is chosen), or else the spelling with a close match."""
    group, _, rest = key.partition(".")
    owners = [f"{group}={name.removesuffix('_schema')}" for (g, name), schema in SCHEMAS.items()
              if g == group and rest in _keys(schema)]
    if owners:
        return (f"{key}: not a key of the chosen {group} option; it belongs to {' or '.join(owners)}: pass "
                f"{owners[0]} with it, or drop it (an experiment= that sets it is made for {owners[0]}; "
                "python train.py --help lists each option's keys)")
    return (f"{key}: unknown config key{did_you_mean(key, known_keys())}; drop it or check the spelling "
            "(python train.py --cfg job lists every key)")


def from_plain(schema: type, values: dict[str, Any]) -> Any:
    """SCHEMA's dataclass from a plain dict (a checkpoint's record of its config), range-checked by the schema.

    Keys the schema no longer defines are dropped and keys it gained take their defaults, so a checkpoint
    written by another version of the code still loads."""
    known = {f.name for f in fields(schema)}
    return schema(**{k: v for k, v in values.items() if k in known})


def group_from_plain(group: str, values: dict[str, Any]) -> Any:
    """A group's node as a plain dict with its `name` (`{"name": "sgd", "lr": 0.1, ...}`) -> its typed schema."""
    name = values.get("name")
    schema = SCHEMAS.get((group, f"{name}_schema"))
    if schema is None:
        names = sorted(n.removesuffix("_schema") for g, n in SCHEMAS if g == group)
        raise UserError(f"{group} {name!r} is not one this version knows; choose one of: {', '.join(names)}")
    return from_plain(schema, values)
