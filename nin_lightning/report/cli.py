"""`python -m nin_lightning.report`: the report of a sweep dir or a W&B group, or of several sweeps side by side."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from nin_lightning.cli.args import Parser, check_writable
from nin_lightning.config.schema import WANDB_FORBIDDEN
from nin_lightning.errors import UserError
from nin_lightning.report.jobs import REJECTED, Job, common_overrides, distinct, parse_overrides, read_sweep_dir
from nin_lightning.report.plots import write_plots
from nin_lightning.report.table import (
    COMPARED,
    Row,
    aggregate,
    compare_to,
    fmt,
    group_keys,
    label,
    pick_baseline,
    section,
    write_csv,
    write_markdown,
)
from nin_lightning.report.wandb_report import SPEC_FILE, build_spec, check_login, publish, write_spec
from nin_lightning.report.wandb_source import read_wandb_group


def rows_of(jobs: Sequence[Job], wanted: dict[str, str] | None, min_effect: float | None = None, where: str = ""
            ) -> tuple[list[str], list[Row], Row | None]:
    """The swept keys, one Row per setting and their baseline; prints a line per job left out of the means."""
    keys = group_keys(jobs)
    rows = aggregate(jobs, keys)
    baseline = pick_baseline(rows, wanted)
    compare_to(rows, baseline, min_effect=min_effect)
    for job in jobs:
        if job.status == REJECTED:
            print(f"[nin] {where}{job.name}: {job.error}")
    return keys, rows, baseline


def make_report(out_dir: Path, title: str, jobs: Sequence[Job], duplicates: Sequence[str], fixed: dict[str, str] | None,
                wanted: dict[str, str] | None, min_effect: float | None) -> list[Path]:
    """report.md, report.csv and the plots in OUT_DIR, of JOBS deduplicated by `distinct`; returns the paths."""
    keys, rows, baseline = rows_of(jobs, wanted, min_effect)
    check_writable(out_dir, True, "DIR", [out_dir / "report.md", out_dir / "report.csv"])
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(out_dir, rows, keys)
    body = section(jobs, rows, keys, fixed or {}, baseline, bool(wanted), duplicates, min_effect)
    images = ["", "## Plots", "", *(f"![{p.stem}]({p.name})" for p in plots)] if plots else []
    md = write_markdown(out_dir / "report.md", title, [*body, *images])
    return [md, write_csv(out_dir / "report.csv", [(None, rows, keys, baseline)]), *plots]


def compare_report(out_dir: Path, sweep_dirs: Sequence[Path], wanted: dict[str, str] | None) -> list[Path]:
    """Several sweeps side by side: a line per sweep (its best setting), then each sweep's own section; every sweep
    is read before anything is written."""
    resolved = [d.resolve() for d in sweep_dirs]
    twice = next((d for d, r in zip(sweep_dirs, resolved, strict=True) if resolved.count(r) > 1), None)
    if twice is not None:
        raise UserError(f"--compare names {twice} twice; give each sweep dir once")
    names = [r.name for r in resolved]
    if len(set(names)) < len(names):  # sweeps of the same name in different places: their paths tell them apart
        names = [str(d) for d in sweep_dirs]
    summary = ["| sweep | swept | jobs | best setting | test/acc | val/acc_best |", "|---|---|---|---|---|---|"]
    sections: list[str] = []
    parts = []
    for name, sweep_dir in zip(names, sweep_dirs, strict=True):
        jobs, duplicates = distinct(read_sweep_dir(sweep_dir))
        keys, rows, baseline = rows_of(jobs, wanted if wanted and set(wanted) <= set(group_keys(jobs)) else None,
                                       where=f"{name}/")
        best = pick_baseline(rows, None)
        cells = [fmt(best.mean[m], best.std[m], 4) for m in (COMPARED, "val/acc_best")] if best else ["-", "-"]
        summary.append(f"| {name} | {', '.join(keys) or 'seed'} | {len(jobs)} | "
                       f"{label(best.setting) if best else '-'} | {' | '.join(cells)} |")
        sections += ["", f"## {name}", "",
                     *section(jobs, rows, keys, common_overrides(sweep_dir), baseline, bool(wanted), duplicates)]
        parts.append((name, rows, keys, baseline))
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_markdown(out_dir / "report.md", f"{len(sweep_dirs)} sweeps side by side", [*summary, *sections]),
            write_csv(out_dir / "report.csv", parts)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = Parser(prog="python -m nin_lightning.report",
                                     description="Ablation report of a sweep: a table over seeds, the difference "
                                                 "to a baseline, plots; and the sweep's W&B report.")
    parser.add_argument("dir", nargs="?", type=Path,
                        help="the sweep dir (outputs/sweeps/NAME); with --wandb and --group: where to write "
                             "(default outputs/reports/GROUP)")
    parser.add_argument("--baseline", action="append", metavar="KEY=VALUE",
                        help="the setting the others are compared with (repeat for several keys); default: the "
                             f"best mean {COMPARED}")
    parser.add_argument("--min-effect", type=float, metavar="X",
                        help=f"the smallest difference in {COMPARED} worth finding (e.g. 0.01): seeds_needed is "
                             "counted for it (default: the observed difference)")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="SWEEP_DIR",
                        help="several sweep dirs side by side (into --out)")
    parser.add_argument("--out", type=Path, help="where to write (default: SWEEP_DIR; with --compare "
                                                 "outputs/reports/compare_...)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT",
                        help=f"with --group: read the runs from W&B; with SWEEP_DIR: write its W&B report's spec "
                             f"({SPEC_FILE})")
    parser.add_argument("--group", help="the W&B group (the sweep dir's name) to read with --wandb")
    parser.add_argument("--publish", action="store_true", help="save the W&B report to W&B (needs `wandb login`)")
    args = parser.parse_args(argv)
    if args.compare:
        if args.dir is not None or args.wandb:
            parser.error("--compare takes the sweep dirs itself (no SWEEP_DIR, no --wandb)")
        if len(args.compare) < 2:
            parser.error("--compare needs two sweep dirs or more")
    elif args.group and not args.wandb:
        parser.error("--group needs --wandb ENTITY/PROJECT")
    elif not args.wandb and args.dir is None:
        parser.error("give a SWEEP_DIR, --wandb ENTITY/PROJECT --group NAME, or --compare SWEEP_DIR SWEEP_DIR ...")
    elif args.wandb and not args.group and args.dir is None:
        parser.error("--wandb needs --group NAME (runs from W&B) or a SWEEP_DIR (its W&B report)")
    if args.min_effect is not None and not 0 < args.min_effect <= 1:
        parser.error(f"--min-effect {args.min_effect:g}: give a difference in {COMPARED} between 0 and 1, e.g. 0.01")
    bad = [b for b in args.baseline or [] if "=" not in b]
    if bad:
        parser.error(f"--baseline {bad[0]}: give KEY=VALUE, e.g. --baseline model.dropout=0.5")
    keys = [b.partition("=")[0] for b in args.baseline or []]
    if len(set(keys)) < len(keys):
        parser.error(f"--baseline names {next(k for k in keys if keys.count(k) > 1)} twice; give each key once")
    if args.publish and not args.wandb:
        parser.error("--publish needs --wandb ENTITY/PROJECT")
    forbidden = WANDB_FORBIDDEN.replace("/", "")
    if args.wandb and (args.wandb.count("/") != 1 or not all(part.strip() for part in args.wandb.split("/"))
                       or set(forbidden) & set(args.wandb)):
        parser.error(f"--wandb {args.wandb}: give ENTITY/PROJECT (W&B names, none of {forbidden}), e.g. "
                     "my-team/nin-lightning")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Build the report and print where its files are; bad input raises UserError (one line, exit code 2)."""
    args = parse_args(argv)
    wanted = parse_overrides(args.baseline) if args.baseline else None
    if args.publish:
        check_login()  # before any work: without a login, one line and nothing written
    if args.compare:
        name = "compare_" + "_".join(d.resolve().name for d in args.compare)
        out_dir = args.out or Path("outputs/reports") / name[:120]
        files = compare_report(out_dir, args.compare, wanted)
        return _done(f"report of {len(args.compare)} sweeps", out_dir, files)
    if args.wandb and args.group:
        jobs = read_wandb_group(args.wandb, args.group)
        out_dir, group = args.out or args.dir or Path("outputs/reports") / args.group, args.group
        title, fixed = f"{args.wandb} group {args.group}", None
    else:
        jobs, out_dir, title, group = read_sweep_dir(args.dir), args.out or args.dir, args.dir.name, args.dir.name
        fixed = common_overrides(args.dir)
    kept, duplicates = distinct(list(jobs))
    files = make_report(out_dir, title, kept, duplicates, fixed, wanted, args.min_effect)
    if args.wandb:
        entity, project = args.wandb.split("/")
        swept = [*group_keys(jobs), *(["seed"] if any("seed" in j.overrides for j in jobs) else [])]
        spec = build_spec(entity, project, group, swept, {k for j in jobs for k in j.config})
        files.append(write_spec(out_dir / SPEC_FILE, spec))
        if args.publish:
            print(f"[nin] W&B report: {publish(spec)}")
    counted = f" ({len(duplicates)} repeated a setting and seed: each counted once)" if duplicates else ""
    return _done(f"report of {len(jobs)} jobs{counted}", out_dir, files)


def _done(what: str, out_dir: Path, files: Sequence[Path]) -> int:
    print(f"[nin] {what} in {out_dir}:")
    for path in files:
        print(f"  {path}")
    return 0
