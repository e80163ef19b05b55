"""The W&B run's config: what a W&B user filters and groups runs by.

- Hydra's group choices under one key, `choices` (`choices.experiment=quickstart`, `choices.dataset=mnist`);
- the config's values that change what a run computes; not the logger's settings, the console's, resume
  or local paths (NOT_RESULT), which would make identical runs look different;
- under a W&B sweep agent, each swept key once: the agent already set it flat (`model.dropout`), so it is
  not repeated in the nested config.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

CHOICE_GROUPS = ("experiment", "dataset", "model", "optimizer", "scheduler", "trainer")
# Keys (dotted) that do not change what a run computes: kept out of the W&B config.
NOT_RESULT = ("logger", "verbose", "resume", "ckpt_path", "compile_cache_dir", "tags", "dataset.root",
              "dataset.download", "dataset.num_workers")


def _drop(config: dict[str, Any], dotted: str) -> Any:
    """Remove DOTTED (`model.dropout`) from the nested CONFIG; its value, or None when absent."""
    *parents, last = dotted.split(".")
    node: Any = config
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return node.pop(last, None) if isinstance(node, dict) else None


def run_config(plain: Mapping[str, Any], choices: Mapping[str, str], agent_keys: Iterable[str] = (),
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run's W&B config from the job's resolved config PLAIN (nested), Hydra's CHOICES, the keys a W&B
    agent swept (AGENT_KEYS, set flat) and EXTRA sections (speed, code)."""
    import copy

    config = copy.deepcopy(dict(plain))
    for key in NOT_RESULT:
        _drop(config, key)
    config["choices"] = {group: choices.get(group) for group in CHOICE_GROUPS}
    for key in agent_keys:  # the agent's flat key holds the value; the nested copy would be a second column
        value = _drop(config, key)
        if value is not None:
            config[key] = value
    return config | dict(extra or {})
