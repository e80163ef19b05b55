"""How fast `python train.py` refuses bad input: a typo (Hydra's own check) against a value out of range
(the schema's check), each a real process, tried in turn; prints each median, their ratio, and any dir a
refused start left behind. Usage: python benchmarks/refusal_time.py [--tries 3]

The lean-core target: an out-of-range value is refused within 1.5 times a typo's time (both before torch).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {"typo (model.dropuot=0.3)": "model.dropuot=0.3", "out of range (model.dropout=1.5)": "model.dropout=1.5"}


def refuse(arg: str, where: Path) -> tuple[float, int, list[str]]:
    """Seconds to the refusal, the exit code, and what the refused start left in WHERE."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NIN_", "HYDRA_"))}
    env["NIN_OUTPUT_DIR"] = str(where / "outputs")
    begin = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), arg], cwd=where, env=env, capture_output=True)
    seconds = time.perf_counter() - begin
    return seconds, done.returncode, sorted(str(p.relative_to(where)) for p in where.rglob("*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.tries):
        for name, arg in CASES.items():  # in turn, so that a load on the machine falls on both
            with tempfile.TemporaryDirectory() as tmp:
                seconds, code, left = refuse(arg, Path(tmp))
            times[name].append(seconds)
            if code == 0 or left:
                print(f"{name}: exit {code}, left behind: {left or 'nothing'}")
    for name, tried in times.items():
        print(f"{name:34s} median {statistics.median(tried):5.2f} s  ({', '.join(f'{t:.2f}' for t in tried)})")
    typo, out_of_range = (statistics.median(t) for t in times.values())
    print(f"ratio out of range / typo: {out_of_range / typo:.2f} (target: at most 1.5)")


if __name__ == "__main__":
    main()
