"""`python -m nin_lightning.predict RUN_DIR IMAGES... [--ckpt best|last] [--top K] [--out FILE.csv]`: classify
PNG/JPEG files, or folders of them, with a trained run (docs/using-models.md)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from nin_lightning.cli.args import check_out, check_writable, log_to_wandb, open_run, run_parser, split_overrides
from nin_lightning.cli.errors import one_line_errors
from nin_lightning.rundir.layout import PREDICTIONS_DIR
from nin_lightning.status import say


def main(argv: Sequence[str] | None = None) -> int:
    """Print each image's most probable classes and write them as CSV."""
    from nin_lightning.inference.run_files import DEFAULT_TOP

    parser = run_parser("predict", "Classify image files with a trained run: each file's most probable classes, "
                                   "printed and written as CSV.")
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="PNG/JPEG files, or folders of them")
    parser.add_argument("--top", type=int, default=DEFAULT_TOP, help=f"classes per image (default {DEFAULT_TOP})")
    parser.add_argument("--out", type=Path, help="the CSV (default: RUN_DIR/predictions/<time>.csv)")
    args = parser.parse_intermixed_args(argv)
    overrides, images = split_overrides(args.images)
    check_out(args.out, args.run_dir, ".csv")
    run = open_run(args, overrides, compile=False)
    from nin_lightning.atomic_files import atomic_write
    from nin_lightning.inference.prediction import csv_text, line, predict_files

    out = args.out or run.run_dir / PREDICTIONS_DIR / f"{datetime.now():%Y-%m-%d_%H-%M-%S-%f}.csv"  # new each time
    check_writable(out, args.out is not None, "FILE.csv")
    predictions = predict_files(run, [Path(p) for p in images], args.top)
    for prediction in predictions:
        print(line(run, prediction))
    converted = sum(bool(p.converted) for p in predictions)
    if converted:
        size = run.dataset.image_size
        say(f"{converted} of {len(predictions)} images converted to the run's {run.model.hparams['in_channels']}x"
            f"{size}x{size} input (see the CSV's `converted` column)")
    csv_path = atomic_write(out, csv_text(run, predictions))
    say(f"wrote {csv_path}")
    log_to_wandb("predict", args, csv_path.parent, {"top": args.top},
                 {"images": len(predictions), "converted": converted, "file": csv_path.name})
    return 0


if __name__ == "__main__":
    raise SystemExit(one_line_errors(main))
