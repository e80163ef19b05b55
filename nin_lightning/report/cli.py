"""`python -m nin_lightning.report SWEEP_DIR` or `--wandb ENTITY/PROJECT --group NAME [OUT_DIR]`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from nin_lightning.report.jobs import Job, distinct, read_sweep_dir
from nin_lightning.report.plots import write_plots
from nin_lightning.report.table import aggregate, group_keys, write_csv, write_markdown
from nin_lightning.report.wandb_source import read_wandb_group


def make_report(out_dir: Path, title: str, jobs: Sequence[Job]) -> list[Path]:
    """Write report.md, report.csv and the PNG plots into out_dir; returns their paths."""
    jobs, duplicates = distinct(list(jobs))
    keys = group_keys(jobs)
    rows = aggregate(jobs, keys)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(out_dir, rows, keys)
    md = write_markdown(out_dir / "report.md", title, jobs, rows, keys, plots, duplicates)
    return [md, write_csv(out_dir / "report.csv", rows, keys), *plots]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(prog="python -m nin_lightning.report",
                                     description="Ablation report of a sweep: a table over seeds and plots.")
    parser.add_argument("dir", nargs="?", type=Path,
                        help="the sweep dir (outputs/sweeps/NAME); with --wandb: where to write (default "
                             "outputs/reports/GROUP)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from W&B instead of a sweep dir")
    parser.add_argument("--group", help="the W&B group (the sweep dir's name) to read with --wandb")
    args = parser.parse_args(argv)
    if args.wandb and not args.group:
        parser.error("--wandb needs --group NAME")
    if not args.wandb and args.dir is None:
        parser.error("give a SWEEP_DIR, or --wandb ENTITY/PROJECT --group NAME")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Build the report and print where its files are. Bad input (no such sweep dir, no jobs, W&B unreadable)
    raises UserError; `python -m nin_lightning.report` prints it as one line on stderr and exits with 2."""
    args = parse_args(argv)
    if args.wandb:
        jobs = read_wandb_group(args.wandb, args.group)
        out_dir, title = args.dir or Path("outputs/reports") / args.group, f"{args.wandb} group {args.group}"
    else:
        jobs, out_dir, title = read_sweep_dir(args.dir), args.dir, args.dir.name
    files = make_report(out_dir, title, jobs)
    repeats = len(jobs) - len(distinct(list(jobs))[0])
    counted = f" ({repeats} repeated a setting and seed: each counted once)" if repeats else ""
    print(f"[nin] report of {len(jobs)} jobs{counted} in {out_dir}:")
    for path in files:
        print(f"  {path}")
    return 0
