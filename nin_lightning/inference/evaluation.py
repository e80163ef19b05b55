"""Evaluate a trained run again with its own test pass (so top-1 reproduces metrics.json's `test/acc`), every
logit collected for top-5, per-class accuracy, NLL, calibration error and a confusion matrix (docs/using-models.md)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassConfusionMatrix
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_calibration_error

from nin_lightning import metric_names as names
from nin_lightning.atomic_files import atomic_write
from nin_lightning.errors import UserError
from nin_lightning.inference.loading import LoadedRun
from nin_lightning.inference.prediction import csv_rows, ranked
from nin_lightning.inference.run_files import SPLITS

EVAL_FILES = ("eval.json", "confusion_matrix.png", "predictions.csv")  # what write_outputs writes, in order
ECE_BINS = 15  # equal-width confidence bins: Guo et al. (2017)'s choice, and torchmetrics' default
TEXT_CELLS_UP_TO = 20  # classes up to which the confusion-matrix PNG prints counts in its cells


class CollectLogits(L.Callback):
    """The logits the module's evaluation step returns, in batch order (CPU): the split's, image by image."""

    def __init__(self) -> None:
        self.logits: list[torch.Tensor] = []

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self.logits.append(outputs.detach().float().cpu())  # bf16 -> fp32 is exact: the argmax is the module's

    on_validation_batch_end = on_test_batch_end


def evaluate_run(run: LoadedRun, split: str = "test") -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The run's test (or validation) pass over SPLIT: every image's logits (fp32), label, and eval.json's record."""
    if split not in SPLITS:
        raise UserError(f"--split {split}: not a valid choice; choose test or val")
    labels = run.split(split).labels  # the evaluation loaders keep the split's order, every image once
    collector = CollectLogits()
    trainer = run.trainer([collector])
    step = trainer.test if split == "test" else trainer.validate
    step(run.model, datamodule=run.datamodule(), verbose=False)
    logits = torch.cat(collector.logits)
    classes, acc = int(run.model.hparams["num_classes"]), names.acc(split)
    result: dict[str, Any] = {
        "run_dir": str(run.run_dir), "checkpoint": str(run.checkpoint.relative_to(run.run_dir)),
        "trained_epochs": run.model.trained_epochs, "dataset": run.dataset.name, "split": split,
        "images": len(labels), "tta": bool(run.model.tta), "precision": run.precision, "device": run.device,
        "eval_batch_size": run.dataset.eval_batch_size,
        acc: float(multiclass_accuracy(logits, labels, classes, average="micro")),
    }
    if names.has_top5(classes):  # as training logs it
        result[names.acc5(split)] = float(multiclass_accuracy(logits, labels, classes, average="micro", top_k=5))
    # the loss as the module logged it (label smoothing included, like metrics.json's; validation's: not to loggers)
    result[names.loss(split)] = float(trainer.callback_metrics[names.loss(split)])
    result[f"{split}/nll"] = float(F.cross_entropy(logits, labels))  # plain NLL of the softmax: no label smoothing
    result[f"{split}/ece"] = float(multiclass_calibration_error(logits.softmax(1), labels, classes, n_bins=ECE_BINS))
    per_class = multiclass_accuracy(logits, labels, classes, average="none")
    support = torch.bincount(labels, minlength=classes)
    result[f"{split}/acc_per_class"] = {run.label(i): float(per_class[i]) if support[i] else None
                                        for i in range(classes)}
    result["ece_bins"] = ECE_BINS
    # metrics.json's test/acc scores best.ckpt: only that pass has a number to reproduce
    recorded = run.metrics.get(acc) if (split, run.checkpoint.name) == ("test", "best.ckpt") else None
    if not isinstance(recorded, int | float) or isinstance(recorded, bool) or not 0 <= recorded <= 1:
        recorded = None  # a metrics.json edited by hand (text, NaN, out of range): nothing to compare with
    result[f"metrics.json {acc}"] = recorded
    result["same_as_metrics_json"] = None if recorded is None else recorded == result[acc]
    return logits, labels, result


def _confusion_png(path: Path, matrix: torch.Tensor, labels: list[str], title: str) -> None:
    """The confusion matrix drawn by torchmetrics on a figure of matplotlib's Agg backend (no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(labels)
    side = min(20.0, 4.0 + 0.3 * n)  # inches: 7 for 10 classes, 20 (the cap) for 100
    fig = Figure(figsize=(side, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    MulticlassConfusionMatrix(n).plot(val=matrix, ax=ax, add_text=n <= TEXT_CELLS_UP_TO, labels=labels)
    ax.set_title(title)
    if n > TEXT_CELLS_UP_TO:
        ax.tick_params(labelsize=5)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic_write(path, buffer.getvalue())


def _predictions_csv(run: LoadedRun, logits: torch.Tensor, labels: torch.Tensor) -> str:
    """One row per image of the split, in its order: label, predicted class and its probability (and names)."""
    probs, classes = ranked(logits, 1)
    named = run.class_names is not None
    rows: list[list[Any]] = [["index", "label", "predicted", "probability",
                              *(["label_name", "predicted_name"] if named else [])]]
    for i, (label, pred, prob) in enumerate(zip(labels.tolist(), classes[:, 0].tolist(), probs[:, 0].tolist(),
                                                strict=True)):
        rows.append([i, label, pred, f"{prob:.6f}", *([run.label(label), run.label(pred)] if named else [])])
    return csv_rows(rows)


def write_outputs(run: LoadedRun, logits: torch.Tensor, labels: torch.Tensor, result: dict[str, Any],
                  out_dir: Path) -> list[Path]:
    """eval.json, confusion_matrix.png and predictions.csv in OUT_DIR."""
    classes, split = int(run.model.hparams["num_classes"]), result["split"]
    matrix = MulticlassConfusionMatrix(classes)(logits, labels)
    class_names = [run.label(i) for i in range(classes)]
    paths = [out_dir / name for name in EVAL_FILES]
    record = {**result, "confusion_matrix": matrix.tolist(), "class_names": class_names}
    atomic_write(paths[0], json.dumps(record, indent=2) + "\n")
    _confusion_png(paths[1], matrix, class_names, f"{run.dataset.name} {split}: {names.acc(split)} "
                                                  f"{result[names.acc(split)]:.4f} ({run.checkpoint.name})")
    atomic_write(paths[2], _predictions_csv(run, logits, labels))
    return paths


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What the evaluate command prints: the setting, the scores, and how they compare with metrics.json."""
    s = result["split"]
    on = {True: "on", False: "off"}
    lines = [f"{result['checkpoint']} (after {result['trained_epochs']} epochs) on {result['dataset']} {s}: "
             f"{result['images']} images, {result['device']}, {result['precision']}, tta {on[result['tta']]}"]
    recorded = result[f"metrics.json {names.acc(s)}"]
    compared = "" if recorded is None else (f" (metrics.json: {recorded:.4f}, "
                                            f"{'the same' if result['same_as_metrics_json'] else 'different'})")
    lines.append(f"{names.acc(s)} {result[names.acc(s)]:.4f}{compared}")
    lines += [f"{key} {result[key]:.4f}" for key in (names.acc5(s), names.loss(s), f"{s}/nll", f"{s}/ece")
              if key in result]
    per_class = " | ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in result[f"{s}/acc_per_class"].items())
    lines.append(f"{s}/acc per class: {per_class}")
    return lines
