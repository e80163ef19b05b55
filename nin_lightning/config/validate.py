"""A composed config -> the typed `TrainConfig` (or a one-line `UserError`); the config as a plain dict."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nin_lightning.config.schema import TrainConfig
from nin_lightning.config.store import unknown_key
from nin_lightning.errors import UserError


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


def validate(cfg: DictConfig) -> TrainConfig:
    """Resolve `cfg` and build the dataclasses, which raises `UserError` on out-of-range values."""
    unknown = _unknown_keys(cfg)
    if unknown:
        key = unknown[0]
        raise UserError(unknown_key(key))
    try:
        obj = OmegaConf.to_object(cfg)
    except Exception as exc:
        for link in (exc, exc.__cause__, exc.__context__):
            if isinstance(link, UserError):
                raise link from None
        raise
    if not isinstance(obj, TrainConfig):
        raise UserError("the composed config is not a TrainConfig; start from conf/train.yaml")
    return obj


def surprises(conf: TrainConfig) -> list[str]:
    """What a valid config holds that is probably not what was meant, one line each (said at the start)."""
    lines = []
    epochs = conf.trainer.max_epochs
    milestones = list(getattr(conf.scheduler, "milestones", None) or [])
    late = [m for m in milestones if epochs != -1 and m >= epochs]
    if late:  # a milestone m changes the LR after m epochs: at or after max_epochs, never
        lines.append(f"warning: scheduler.milestones={milestones}: {', '.join(map(str, late))} "
                     f"{'is' if len(late) == 1 else 'are'} not below trainer.max_epochs={epochs}, so the LR never "
                     "changes there (a milestone m changes it after m epochs); lower the milestones or raise "
                     "trainer.max_epochs")
    return lines


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
