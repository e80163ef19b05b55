"""What the commands on a trained run share (`python -m nin_lightning.evaluate | predict | export`)."""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from nin_lightning.cli.errors import fail
from nin_lightning.errors import UserError
from nin_lightning.rundir.layout import COMMAND_DIRS, HYDRA_DIR
from nin_lightning.status import say

if TYPE_CHECKING:
    from nin_lightning.inference.loading import LoadedRun

OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")  # key=value, as train.py takes overrides


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one `error:` line and exit code 2, like any other (not its usage block)."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message}; see {self.prog} --help")


def run_parser(command: str, description: str) -> Parser:
    """A parser with RUN_DIR and --ckpt best|last."""
    parser = Parser(prog=f"python -m nin_lightning.{command}", description=description)
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="a training run's dir (its hydra.run.dir, e.g. outputs/runs/<time>)")
    parser.add_argument("--ckpt", choices=("best", "last"), default="best",
                        help="checkpoints/best.ckpt (the best epoch, what the run's test scored) or last.ckpt")
    parser.add_argument("--wandb", choices=("off", "auto", "online", "offline"), default="off",
                        help=f"log a W&B run of job type {command} (auto: online with a login, else offline) that "
                             "uses the checkpoint as its input model artifact, in the training run's project and "
                             "group (default off)")
    return parser


def log_to_wandb(command: str, args: argparse.Namespace, out_dir: Path, config: dict[str, Any],
                 summary: dict[str, Any]) -> None:
    """COMMAND's W&B run unless --wandb=off (tracking/wandb_run.py), SUMMARY's plain values its summary."""
    if args.wandb == "off":
        return
    from nin_lightning.inference.run_files import checkpoint_path
    from nin_lightning.tracking.wandb_run import log_command_run

    plain = {k: v for k, v in summary.items() if isinstance(v, int | float | str | bool) or v is None}
    log_command_run(command, args.wandb, args.run_dir, args.ckpt, checkpoint_path(args.run_dir, args.ckpt),
                    out_dir, config, plain)


def split_overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the `key=value` overrides, the other arguments: an existing file named `a=b.png` among them), in order."""
    overrides = [a for a in args if OVERRIDE.match(a) and not os.path.exists(a)]
    return overrides, [a for a in args if a not in overrides]


def on_off(value: str | None) -> bool | None:
    """--tta on|off -> True/False; not given -> None (the run's own choice)."""
    return None if value is None else value == "on"


def quiet_lightning() -> None:
    """Lightning's start-up lines (`GPU available: ...`) muted, and the library warnings train.py filters."""
    import lightning  # noqa: F401  (its loggers get their level when it is imported; ours must come after)

    from nin_lightning.cli.quiet import quiet_libraries

    quiet_libraries()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def check_out(out: Path | None, run_dir: Path, suffix: str | None = None) -> None:
    """--out, not one of the run's own files (inside RUN_DIR only under the commands' dirs), a file ending in SUFFIX
    (None: a dir)."""
    if out is None:
        return
    resolved, own = out.resolve(), run_dir.resolve()
    home = next((d for d in [resolved, *resolved.parents] if d == own or (d / HYDRA_DIR).is_dir()), None)
    if home is not None and resolved.relative_to(home).parts[:1] not in [(d,) for d in COMMAND_DIRS]:
        shown = run_dir if home == own else home  # this run's dir, or another run's
        raise UserError(f"--out {out}: inside the run dir it would overwrite the run's own files"
                        f"{'' if home == own else f' ({home})'}; write it elsewhere, or under "
                        f"{shown}/{{{','.join(COMMAND_DIRS)}}}/ (or leave --out out)")
    if suffix is not None and out.suffix != suffix:
        raise UserError(f"--out {out}: give a file name ending in {suffix}")
    if out.exists() and out.is_dir() != (suffix is None):  # SUFFIX None: a dir of files
        kind, needed = ("a file", "a directory") if suffix is None else ("a directory", f"a file ending in {suffix}")
        raise UserError(f"--out {out} is {kind}; give {needed}")


def check_writable(out: Path, chosen: bool, example: str, files: Sequence[Path] = ()) -> None:
    """Before any work: OUT (a dir when EXAMPLE is DIR, else a file, replaced if it exists) and the FILES written
    with it can be written, or one line (naming --out unless CHOSEN)."""
    fix = "pass another --out" if chosen else f"pass --out {example} (somewhere you can write)"
    in_the_way = next((f for f in files if f.is_dir()), None)
    if in_the_way is not None:
        raise UserError(f"cannot write {in_the_way}: a directory is in its place; move it, or {fix}")
    start = out if example == "DIR" else out.parent  # a file is written beside itself, then renamed over it
    existing = next((p for p in [start, *start.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"cannot write {out}: {existing} is a file, not a directory; {fix}")
    if existing is None or os.access(existing, os.W_OK | os.X_OK):
        return
    raise UserError(f"cannot write {out}: {existing} is read-only for this user or filesystem; nothing was "
                    f"computed: {fix}")


def open_run(args: argparse.Namespace, overrides: Sequence[str], **options: Any) -> LoadedRun:
    """ARGS.run_dir's ARGS.ckpt loaded as its test ran (load_run with OPTIONS); mistakes fail before torch loads."""
    from nin_lightning.inference.run_files import checkpoint_path, parse_overrides

    checkpoint_path(args.run_dir, args.ckpt)
    dataset = parse_overrides(overrides)
    quiet_lightning()
    from nin_lightning.inference.loading import load_run

    run = load_run(args.run_dir, args.ckpt, dataset, **options)
    for note in run.notes:
        say(note)
    return run
