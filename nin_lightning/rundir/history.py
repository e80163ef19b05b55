"""RUN_DIR/history.csv: one row per epoch (callbacks/history.py appends them)."""

from __future__ import annotations

import csv
from pathlib import Path

from nin_lightning.errors import UserError


def read_history(path: Path) -> list[dict[str, str]]:
    """The whole rows of PATH ([] without it; a row cut short by a crash is dropped); UserError when not CSV text."""
    if not path.exists():
        return []
    try:
        text = path.read_text()
        if "\0" in text:
            raise ValueError("it holds NUL bytes")
        rows = list(csv.DictReader(text.splitlines()))
    except (UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise UserError(f"{path} is not a readable history ({type(exc).__name__}: {str(exc)[:80]}); restore it, "
                        "or delete it to keep only the epochs trained from now on") from exc
    return [row for row in rows if None not in row.values() and None not in row and str(row.get("epoch", "")).isdigit()]
