"""`python -m nin_lightning.evaluate RUN_DIR [--ckpt best|last] [--split test|val] [--tta on|off] [--out DIR]
[dataset.root=DIR dataset.eval_batch_size=N ...]`: evaluate a trained run again (docs/using-models.md)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nin_lightning.cli.args import check_out, check_writable, log_to_wandb, on_off, open_run, run_parser
from nin_lightning.cli.errors import one_line_errors
from nin_lightning.rundir.layout import EVAL_DIR
from nin_lightning.status import say


def main(argv: Sequence[str] | None = None) -> int:
    """Print the scores and write eval.json, confusion_matrix.png and predictions.csv."""
    from nin_lightning.inference.run_files import SPLITS

    parser = run_parser("evaluate", "Evaluate a trained run again: top-1, top-5, per-class accuracy, NLL and "
                                    "calibration error, a confusion matrix; never changes the run's files.")
    parser.add_argument("--split", choices=SPLITS, default="test", help="the run's test split, or its val split")
    parser.add_argument("--tta", choices=("on", "off"), help="flip test-time augmentation (default: as the run)")
    parser.add_argument("--out", type=Path, help="where to write (default: RUN_DIR/eval/<ckpt>_<split>[_tta])")
    parser.add_argument("overrides", nargs="*", default=[], metavar="dataset.KEY=VALUE",
                        help="dataset.root, dataset.eval_batch_size, dataset.num_workers, dataset.download")
    args = parser.parse_intermixed_args(argv)
    check_out(args.out, args.run_dir, None)
    run = open_run(args, args.overrides, tta=on_off(args.tta))
    from nin_lightning.inference.evaluation import EVAL_FILES, evaluate_run, summary_lines, write_outputs

    out = args.out or run.run_dir / EVAL_DIR / f"{args.ckpt}_{args.split}{'_tta' if run.model.tta else ''}"
    check_writable(out, args.out is not None, "DIR", [out / name for name in EVAL_FILES])
    logits, labels, result = evaluate_run(run, args.split)
    for line in summary_lines(result):
        print(line)
    paths = write_outputs(run, logits, labels, result, out)
    say(f"wrote {paths[0]}, {', '.join(p.name for p in paths[1:])}")
    log_to_wandb("evaluate", args, out, {"split": args.split, "tta": bool(run.model.tta)}, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(one_line_errors(main))
