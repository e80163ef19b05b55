"""Which of a job's recorded values the report may compute with: a finite number in its range, nothing else.

`to_float` (metrics.json, a W&B summary) refuses what a number only resembles: a bool (`true` is not 1.0),
text (`"0.99"`), NaN and inf, lists. `vet` checks a job's values against their ranges (an accuracy in
[0, 1], times >= 0, counts whole numbers >= 0) and says why each one it drops cannot be used; a completed job that lacks
one it needs, or holds one it cannot use, is left out of the means (jobs.py marks it `rejected`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

ACCURACIES = frozenset({"val/acc_best", "test/acc", "val/acc", "train/acc"})
COUNTS = frozenset({"epochs", "params", "macs", "data/train_size", "data/val_size", "data/test_size"})  # whole numbers
NEEDED = ("test/acc", "epochs", "wall_time_s")  # what every completed job records (and val/acc_best, with a val split)


def why_not(key: str, value: Any) -> str | None:
    """Why VALUE cannot stand for KEY ('is true (a bool, not a number)', 'is 1.5, outside [0, 1]'), or None."""
    if value is None:
        return "is missing"
    if isinstance(value, bool):
        return f"is {str(value).lower()} (a bool, not a number)"
    if isinstance(value, str):
        return f"is {value!r} (text, not a number)"
    if not isinstance(value, int | float):
        return f"is {value!r} ({type(value).__name__}, not a number)"
    if not math.isfinite(value):
        return f"is {value} (not a finite number)"
    if key in ACCURACIES and not 0.0 <= value <= 1.0:
        return f"is {value:g}, outside [0, 1]"
    if key not in ACCURACIES and value < 0:
        return f"is {value:g}, below 0"
    if key in COUNTS and value != int(value):
        return f"is {value:g}, not a whole number"
    return None


def to_float(value: Any, key: str = "") -> float | None:
    """A finite number (in KEY's range) as a float; None for blanks, bools, text, NaN, inf and anything else."""
    return None if why_not(key, value) is not None else float(value)


def vet(raw: Mapping[str, Any], keys: tuple[str, ...], needed: tuple[str, ...]) -> tuple[dict[str, float | None],
                                                                                      list[str]]:
    """({key: the value, or None where it cannot be used}, ['test/acc is true (a bool, not a number)', ...]):
    a problem for each value of KEYS that is there (not null) but unusable, and for each of NEEDED that is missing."""
    out: dict[str, float | None] = {}
    problems = []
    for key in keys:
        problem = why_not(key, raw.get(key))
        out[key] = float(raw[key]) if problem is None else None
        if problem is not None and (raw.get(key) is not None or key in needed):
            problems.append(f"{key} {problem}")
    return out, problems


def cell(key: str, text: str | None) -> float | None:
    """A CSV cell (history.csv: text by nature) as a number in KEY's range; None when blank or unusable."""
    try:
        number = float(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return number if why_not(key, number) is None else None
