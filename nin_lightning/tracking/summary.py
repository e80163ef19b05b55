"""What a run's summary says about it: in metrics.json (flat keys) and in the W&B run's summary."""

from __future__ import annotations

from typing import Any

from nin_lightning import metric_names as names

# The W&B summary's keys (a runs table's columns), all from the run's metrics.json.
SUMMARY_KEYS = ("status", "wall_time_s", "epochs", names.BEST_EPOCH, "params", "macs", names.acc(names.TEST),
                names.VAL_ACC_BEST, "code/commit", "code/dirty", "error", "data/train_size", "data/val_size",
                "data/test_size")


def run_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The summary of a run from its metrics.json: the SUMMARY_KEYS it holds."""
    return {key: metrics[key] for key in SUMMARY_KEYS if metrics.get(key) is not None}


def code_and_size_keys(code: dict[str, Any], cost: dict[str, int]) -> dict[str, Any]:
    """metrics.json's keys about the code and the model, from the start on: code/commit, code/dirty,
    code/version, params, macs."""
    return {**{f"code/{k}": v for k, v in code.items()}, **cost}
