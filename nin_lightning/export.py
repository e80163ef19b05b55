"""`python -m nin_lightning.export RUN_DIR --format onnx [--ckpt best|last] [--out FILE.onnx]`: a trained run's
network as ONNX, checked against PyTorch, with its preprocessing beside it (docs/using-models.md)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nin_lightning.cli.args import check_out, check_writable, log_to_wandb, open_run, run_parser
from nin_lightning.cli.errors import one_line_errors
from nin_lightning.rundir.layout import EXPORT_DIR
from nin_lightning.status import say


def main(argv: Sequence[str] | None = None) -> int:
    """Export, measure |ONNX - PyTorch| on a real batch, and print it."""
    parser = run_parser("export", "Export a trained run's network (ONNX, dynamic batch axis), checked against "
                                  "PyTorch on the run's test images, with its preprocessing recorded beside it.")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="onnx (the only format so far)")
    parser.add_argument("--out", type=Path, help="the model file (default: RUN_DIR/export/<ckpt>.onnx)")
    parser.add_argument("overrides", nargs="*", default=[], metavar="dataset.KEY=VALUE",
                        help="dataset.root (the test images the export is checked on), dataset.download")
    args = parser.parse_intermixed_args(argv)
    check_out(args.out, args.run_dir, ".onnx")
    run = open_run(args, args.overrides, compile=False)
    from nin_lightning.inference.onnx_export import ONNX_TOLERANCE, export_onnx

    out = args.out or run.run_dir / EXPORT_DIR / f"{run.checkpoint.stem}.onnx"
    check_writable(out, args.out is not None, "FILE.onnx", [out.with_name(f"{out.stem}.preprocessing.json")])
    check = export_onnx(run, out)["check"]
    print(f"onnx: max |ONNX - PyTorch| = {check['max_abs_diff']:.3g} on the logits of {check['images']} test "
          f"images (tolerance {ONNX_TOLERANCE:g}); batch axis dynamic (checked with {check['images']} and 1 images)")
    say(f"wrote {out} and {out.stem}.preprocessing.json")
    log_to_wandb("export", args, out.parent, {"format": args.format},
                 {"max_abs_diff": check["max_abs_diff"], "images": check["images"], "file": out.name})
    return 0


if __name__ == "__main__":
    raise SystemExit(one_line_errors(main))
