"""What the CLI's start imports and what each import costs (`python -X importtime`), for the modules a run
loads before it trains (nin_lightning.run) and those of the commands that need no torch.

    python benchmarks/import_cost.py                 # the default modules below
    python benchmarks/import_cost.py nin_lightning.report

Prints, per module: its total import time, the packages that cost most (their own time), and for each of
those the chain of imports that brought it in (who needs it).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

MODULES = ["nin_lightning.run", "nin_lightning.cli.task", "nin_lightning.report", "nin_lightning.evaluate"]
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def importtime(module: str) -> list[tuple[int, int, str]]:
    """(depth, own microseconds, name) per import, in importtime's order (children before their parent)."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                         text=True, check=True).stderr
    return [(len(m[3]), int(m[1]), m[4]) for m in map(LINE.match, err.splitlines()) if m]


def importer_chain(rows: list[tuple[int, int, str]], index: int, length: int = 5) -> list[str]:
    """Who imported rows[index]: the next rows with a smaller depth (importtime prints a parent after its
    children)."""
    depth, chain = rows[index][0], []
    for row_depth, _, name in rows[index + 1:]:
        if row_depth < depth:
            chain.append(name)
            depth = row_depth
    return chain[:length]


def main() -> None:
    for module in sys.argv[1:] or MODULES:
        rows = importtime(module)
        own = Counter()
        for _, micros, name in rows:
            own[name.split(".")[0]] += micros
        print(f"{module}: {sum(own.values()) / 1e6:.2f} s of imports")
        for package, micros in own.most_common(6):
            first = next(i for i, row in enumerate(rows) if row[2].split(".")[0] == package)
            print(f"  {micros / 1e6:5.2f} s {package:14s} <- {' <- '.join(importer_chain(rows, first)) or '(itself)'}")


if __name__ == "__main__":
    main()
