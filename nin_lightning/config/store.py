"""The schemas in Hydra's ConfigStore and every key they define (one table); a composed config -> `TrainConfig`."""

from __future__ import annotations

import functools
from dataclasses import fields, is_dataclass
from typing import Any, get_type_hints

from omegaconf import DictConfig, OmegaConf

from nin_lightning.config import schema as schemas
from nin_lightning.errors import UserError, did_you_mean, user_error

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
    """Put every schema in Hydra's ConfigStore, and register the resolvers conf/ uses (config/sweep.py)."""
    from hydra.core.config_store import ConfigStore

    from nin_lightning.config.sweep import register_resolvers

    register_resolvers()

    store = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        store.store(group=group, name=name, node=node)
    _maximising_optuna(store)


def _maximising_optuna(store: Any) -> None:
    """`hydra/sweeper=optuna` maximises (train.py returns val/acc_best; the plugin's entry minimises): its entry,
    stored by Hydra's plugin scan, is stored again with `direction: maximize` (docs/architecture.md says why)."""
    from hydra.core.plugins import Plugins

    Plugins.instance()  # the scan, once per process: it runs the plugin's config module, which stores its entry
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
    """The one-line error for KEY, which the composed config lacks: the group options that define it, or a spelling."""
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
    """SCHEMA's dataclass from a plain dict (a checkpoint's record of its config), range-checked: keys it no longer
    defines are dropped and new keys take their defaults, so a checkpoint of another version still loads."""
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


def _unknown_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Keys that no schema defines: what a `+key=value` override forces past Hydra's struct check."""
    schema = OmegaConf.get_type(node)
    if schema is None or not is_dataclass(schema):
        return []
    names = {f.name for f in fields(schema)}
    unknown = [f"{prefix}{key}" for key in node if key not in names]
    for key in sorted(names & set(node)):
        if OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key):
            continue
        child = node[key]
        if isinstance(child, DictConfig):
            unknown += _unknown_keys(child, f"{prefix}{key}.")
    return unknown


def validate(cfg: DictConfig) -> schemas.TrainConfig:
    """Resolve `cfg` and build the dataclasses, which raises `UserError` on out-of-range values."""
    unknown = _unknown_keys(cfg)
    if unknown:
        raise UserError(unknown_key(unknown[0]))
    try:
        obj = OmegaConf.to_object(cfg)
    except Exception as exc:
        if (mistake := user_error(exc)) is not None:
            raise mistake from None
        raise
    if not isinstance(obj, schemas.TrainConfig):
        raise UserError("the composed config is not a TrainConfig; start from conf/train.yaml")
    return obj


def surprises(conf: schemas.TrainConfig) -> list[str]:
    """What a valid config holds that is probably not what was meant, one line each (said at the start)."""
    epochs = conf.trainer.max_epochs  # >= 1: the schema refuses -1
    milestones = list(getattr(conf.scheduler, "milestones", None) or [])
    late = [m for m in milestones if m >= epochs]
    if not late:
        return []
    return [f"warning: scheduler.milestones={milestones}: {', '.join(map(str, late))} "
            f"{'is' if len(late) == 1 else 'are'} not below trainer.max_epochs={epochs}, so the LR never changes "
            "there (a milestone m changes it after m epochs); lower the milestones or raise trainer.max_epochs"]


def to_plain_dict(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a nested dict without Hydra's `_target_`-style keys (for W&B)."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not str(k).startswith("_")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(container)
