"""Test accuracy after every training epoch (`callbacks.test_curve=true`), as the 100-line MNIST script did:
RUN_DIR/test_curve.csv, and test_error.png at the end. `train_time_s` leaves out the test passes
(benchmarks/time_to_accuracy.py relies on that)."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

CURVE_FILE = "test_curve.csv"
PLOT_FILE = "test_error.png"
FIELDS = ["epoch", "test_acc", "test_error", "train_time_s"]


@torch.no_grad()
def evaluate_test_accuracy(trainer: L.Trainer, module: L.LightningModule) -> float:
    """Accuracy of the module's current weights on the whole test split (eval mode, TTA as configured), on
    every rank: under DDP the ranks' counts, kept on the device, are summed in one all-reduce."""
    datamodule = trainer.datamodule
    was_training = module.training
    module.eval()
    counts = torch.zeros(2, dtype=torch.float64, device=module.device)  # correct, images
    try:
        with trainer.precision_plugin.forward_context():
            for images, labels in datamodule.test_dataloader():
                images, labels = images.to(module.device), labels.to(module.device)
                logits = module.evaluate(datamodule.eval_batch(images))[: len(labels)]  # less any padding
                counts[0] += (logits.argmax(1) == labels).sum()
                counts[1] += len(labels)
    finally:
        module.train(was_training)
    if trainer.world_size > 1:
        counts = trainer.strategy.reduce(counts, reduce_op="sum")
    correct, total = counts.tolist()
    return correct / max(1.0, total)


class EpochTestCurve(Callback):
    """After each training epoch: test accuracy -> test_curve.csv; at the end: test_error.png."""

    def __init__(self, run_dir: Path, clock_start: float | None = None, plot: bool = True) -> None:
        self.path = Path(run_dir) / CURVE_FILE
        self.plot_path = Path(run_dir) / PLOT_FILE
        self.clock_start = clock_start  # time.perf_counter() origin; default: the start of fit
        self.plot = plot
        self.eval_time = 0.0
        self.rows: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.clock_start is None:
            self.clock_start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the clock started, less the time spent in test passes."""
        return time.perf_counter() - (self.clock_start or 0.0) - self.eval_time

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        train_time = self.elapsed()
        started = time.perf_counter()
        acc = evaluate_test_accuracy(trainer, pl_module)
        self.eval_time += time.perf_counter() - started
        row = {"epoch": trainer.current_epoch, "test_acc": round(acc, 6), "test_error": round(1 - acc, 6),
               "train_time_s": round(train_time, 3)}
        self.rows.append(row)
        if trainer.is_global_zero:
            new = not self.path.exists() or trainer.current_epoch == 0
            with self.path.open("w" if new else "a", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
        self.after_test(trainer, row)

    def after_test(self, trainer: L.Trainer, row: dict[str, Any]) -> None:
        """Hook for subclasses (e.g. stop once a target accuracy is reached)."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.plot and trainer.is_global_zero and self.path.exists():
            plot_test_error(self.path, self.plot_path)


def plot_test_error(csv_path: Path, png_path: Path) -> None:
    """Test error (%) per epoch from a test_curve.csv, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    with Path(csv_path).open() as fh:
        rows = list(csv.DictReader(fh))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    errors = [100 * float(r["test_error"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, errors, marker="o")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"test error per epoch (best {min(errors):.2f} %)" if errors else "test error per epoch")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
