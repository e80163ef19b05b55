"""RUN_DIR/history.csv: one row per epoch (callbacks/history.py appends them; a resume drops the rows its
checkpoint does not contain)."""

from __future__ import annotations

import csv
from pathlib import Path

from nin_lightning.errors import UserError


def read_history(path: Path) -> list[dict[str, str]]:
    """The whole rows of PATH ([] without the file). A row cut short by a crash mid-write (missing fields)
    is dropped: the epoch it belonged to is trained again after a resume. A file that is not CSV text is a
    one-line UserError naming it and the fix."""
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
