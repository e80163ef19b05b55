"""Seconds to a test accuracy on MNIST-format data: `experiment=fast_mnist` against the 100-line script's recipe.

(a) ours: `nin_lightning.run.train` with `experiment=fast_mnist` (BatchNorm NiN, one-cycle SGD, label
    smoothing, +-2 px shifts, speed switches on `auto`), as `python train.py experiment=fast_mnist` runs it;
(b) reference: the recipe of the well-known 100-line PyTorch NiN MNIST script, as a plain loop here:
    N(0, 0.05) conv init, SGD lr 0.01 / momentum 0.9 / weight decay 1e-5, batch 128, inputs scaled to
    [-1, 1], no ReLU after the last 1x1 conv, 7x7 average pooling and log-softmax, ReduceLROnPlateau('max')
    stepped on the summed per-batch training accuracy, stop once the LR < 1 % of its start.

After every epoch each contender's current weights are scored on the test split. The clock is the wall time
since the contender started (loading the files included), less the time of those test passes; "seconds to
X %" is the clock at the end of the first epoch that scores >= X %. A contender stops once it gets there
(unless --run-to-end), at its own stopping rule, or at --max-epochs / --max-seconds; one that never gets
there is reported with its best accuracy and when it had it.

Same budget for both: the reference holds out no validation data and runs no validation passes, so ours
runs with validation disabled: `dataset.val_size=0` (it trains on every training image, as the reference
does), `trainer.limit_val_batches=0` and `trainer.num_sanity_val_steps=0`. Without validation there is no
val/acc, so no best.ckpt either: Lightning warns (silenced here) and keeps writing last.ckpt every epoch,
which stays in our clock, as does everything else `train` does up to the end of each epoch (Hydra
compose, file loading, Trainer set-up, Lightning's loop). Should an override turn validation back on
(e.g. `dataset.val_size=1000 trainer.limit_val_batches=1.0`), its passes, the sanity check included, are
left out of our clock like the test passes, and the output says how long they took.

    python benchmarks/time_to_accuracy.py [--root DIR] [--target 0.98] [--max-seconds 900] [--max-epochs 15]

--root DIR: a directory holding torchvision's raw MNIST files (DIR/MNIST/raw/*-ubyte). Without it, the
data is written in the same format from one of two sources (`--data`), and the output says so, since its
numbers are not MNIST's:
- `synthetic` (default): class-specific gratings with noise (benchmarks/fake_data.py), --n-train / --n-test;
- `digits`: scikit-learn's bundled handwritten digits (real data, 1,797 images): each 8x8 digit upscaled
  to 20x20 and centred in 28x28, as MNIST's digits are; a fixed class-stratified split, 1,442 train / 355 test.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lightning as L  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from nin_lightning.callbacks import EpochTestCurve  # noqa: E402
from nin_lightning.config import JobContext, register_configs  # noqa: E402

# --- (a) ours ----------------------------------------------------------------------------------------

class Budget(EpochTestCurve):
    """The per-epoch test curve, plus the benchmark's stopping rules (target reached, epochs, seconds).

    Validation passes, if any run (see the module docstring), are left out of the clock like the test
    passes: their time is added to `eval_time`, which `elapsed()` subtracts.
    """

    def __init__(self, run_dir: Path, clock_start: float, target: float, max_epochs: int, max_seconds: float,
                 run_to_end: bool) -> None:
        super().__init__(run_dir, clock_start=clock_start, plot=False)
        self.target, self.max_epochs, self.max_seconds, self.run_to_end = target, max_epochs, max_seconds, run_to_end
        self.n_train = 0
        self.val_time = 0.0
        self.val_passes = 0
        self._val_started: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self.n_train = len(trainer.datamodule.train_split)

    def on_validation_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._val_started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self._val_started is not None:
            spent = time.perf_counter() - self._val_started
            self.val_time += spent
            self.eval_time += spent
            self.val_passes += 1
            self._val_started = None

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.elapsed() > self.max_seconds:
            trainer.should_stop = True

    def after_test(self, trainer: L.Trainer, row: dict[str, Any]) -> None:
        print(f"  ours      epoch {row['epoch'] + 1:3d}: test acc {100 * row['test_acc']:6.2f} %  "
              f"at {row['train_time_s']:7.1f} s", file=sys.__stdout__, flush=True)
        reached = row["test_acc"] >= self.target and not self.run_to_end
        if reached or row["epoch"] + 1 >= self.max_epochs or self.elapsed() > self.max_seconds:
            trainer.should_stop = True


# ours without validation, as the reference (see the module docstring)
NO_VALIDATION = ("dataset.val_size=0", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
                 "callbacks.monitor=train/acc")  # best.ckpt by training accuracy: there is no validation set


def run_ours(root: Path, n_train: int, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    from nin_lightning.run import train

    started = time.perf_counter()
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[
            "experiment=fast_mnist", f"dataset.root={root}", *NO_VALIDATION,
            "logger=none", "trainer.enable_progress_bar=false", *args.overrides])
    run_dir = workdir / f"ours-{time.time_ns()}"
    budget = Budget(run_dir, started, args.target, args.max_epochs, args.max_seconds, args.run_to_end)
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):  # the config tree; our one-line notices are echoed below
        train(cfg, JobContext(run_dir=run_dir), callbacks=[budget])
    for line in captured.getvalue().splitlines():
        if line.startswith("[nin] speed"):
            print(f"  {line}")
    if budget.val_passes:
        print(f"  ours: trained on {budget.n_train} of {n_train} training images; {budget.val_passes} validation "
              f"passes ({budget.val_time:.1f} s), left out of the clock")
    else:
        print(f"  ours: trained on {budget.n_train} of {n_train} training images, no validation pass")
    return budget.rows


# --- (b) the 100-line script's recipe, as a plain loop ---------------------------------------------------

def reference_nin(num_classes: int = 10) -> nn.Sequential:
    """The script's NiN: mlpconv blocks 96-64-48 / 128-96-48 / 128-96-C, no ReLU after the last 1x1 conv."""
    relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
    net = nn.Sequential(
        nn.Conv2d(1, 96, 5, padding=2), relu(), nn.Conv2d(96, 64, 1), relu(), nn.Conv2d(64, 48, 1), relu(),
        nn.MaxPool2d(3, stride=2, ceil_mode=True), nn.Dropout(0.5),
        nn.Conv2d(48, 128, 5, padding=2), relu(), nn.Conv2d(128, 96, 1), relu(), nn.Conv2d(96, 48, 1), relu(),
        nn.MaxPool2d(3, stride=2, ceil_mode=True), nn.Dropout(0.5),
        nn.Conv2d(48, 128, 5, padding=2), relu(), nn.Conv2d(128, 96, 1), relu(), nn.Conv2d(96, num_classes, 1),
        nn.AvgPool2d(7, stride=1), nn.Flatten(), nn.LogSoftmax(dim=1),
    )
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.05)
            nn.init.zeros_(m.bias)
    return net


def write_digits_as_mnist(root: Path) -> None:
    """scikit-learn's digits in MNIST's idx files: 20x20 (bilinear) in a 28x28 frame, 80/20 stratified split."""
    from fake_data import MNIST_FILES, idx_images, idx_labels
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    small = torch.from_numpy(x.reshape(-1, 1, 8, 8) * (255.0 / 16.0)).float()
    big = nn.functional.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    images = nn.functional.pad(big, (4, 4, 4, 4)).clamp(0, 255).round().to(torch.uint8)[:, 0].numpy()
    rng = torch.Generator().manual_seed(0)
    test = torch.zeros(len(y), dtype=torch.bool)
    for k in range(10):
        idx = torch.nonzero(torch.from_numpy(y == k)).flatten()
        test[idx[torch.randperm(len(idx), generator=rng)[: len(idx) // 5]]] = True
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, mask in (("train", ~test), ("test", test)):
        names, payloads = MNIST_FILES[split], (idx_images(images[mask.numpy()]), idx_labels(y[mask.numpy()]))
        for name, payload in zip(names, payloads, strict=True):
            (raw / name).write_bytes(payload)


def load_mnist(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST

    ds = MNIST(str(root), train=train, download=False)
    return ds.data.unsqueeze(1), ds.targets


def run_reference(root: Path, args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    started = time.perf_counter()
    eval_time = 0.0
    torch.manual_seed(seed)
    x_train, y_train = load_mnist(root, train=True)
    x_test, y_test = load_mnist(root, train=False)

    def scaled(x: torch.Tensor) -> torch.Tensor:  # ToTensor + Normalize((0.5,), (0.5,)): [-1, 1]
        return x.float().div_(127.5).sub_(1.0)

    net = reference_nin()
    lr0 = 0.01
    optimizer = torch.optim.SGD(net.parameters(), lr=lr0, momentum=0.9, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "max")
    rows: list[dict[str, Any]] = []
    for epoch in range(args.max_epochs):
        net.train()
        acc_sum = 0.0
        for idx in torch.randperm(len(y_train)).split(128):
            x, y = scaled(x_train[idx]), y_train[idx]
            out = net(x)
            loss = nn.functional.nll_loss(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            acc_sum += (out.argmax(1) == y).float().mean().item()
            if time.perf_counter() - started - eval_time > args.max_seconds:
                break
        scheduler.step(acc_sum)
        clock = time.perf_counter() - started - eval_time
        t = time.perf_counter()
        net.eval()
        with torch.no_grad():
            correct = sum(int((net(scaled(x_test[i])).argmax(1) == y_test[i]).sum())
                          for i in torch.arange(len(y_test)).split(1000))
        eval_time += time.perf_counter() - t
        acc = correct / len(y_test)
        rows.append({"epoch": epoch, "test_acc": acc, "train_time_s": clock})
        lr = optimizer.param_groups[0]["lr"]
        print(f"  reference epoch {epoch + 1:3d}: test acc {100 * acc:6.2f} %  at {clock:7.1f} s  (lr {lr:.0e})",
              flush=True)
        if (acc >= args.target and not args.run_to_end) or clock > args.max_seconds:
            break
        if lr < 0.01 * lr0:  # the script's stopping rule
            print("  reference: LR fell below 1 % of its start: the recipe stops here")
            break
    return rows


# --- report ------------------------------------------------------------------------------------------

def summary(name: str, rows: list[dict[str, Any]], target: float) -> tuple[str, float | None]:
    hit = next((r for r in rows if r["test_acc"] >= target), None)
    if hit:
        return (f"{name}: {100 * target:.1f} % test accuracy after {hit['train_time_s']:.1f} s "
                f"(epoch {hit['epoch'] + 1}, {100 * hit['test_acc']:.2f} %)", hit["train_time_s"])
    if not rows:
        return f"{name}: no epoch completed", None
    best = max(rows, key=lambda r: r["test_acc"])
    return (f"{name}: never reached {100 * target:.1f} % in {rows[-1]['train_time_s']:.1f} s / {len(rows)} "
            f"epochs; best {100 * best['test_acc']:.2f} % at {best['train_time_s']:.1f} s "
            f"(epoch {best['epoch'] + 1})", None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=None, help="directory holding MNIST/raw/*-ubyte (torchvision's)")
    p.add_argument("--target", type=float, default=0.98, help="test accuracy to reach (default 0.98)")
    p.add_argument("--max-seconds", type=float, default=900.0, help="per contender (clock as above)")
    p.add_argument("--max-epochs", type=int, default=15, help="per contender")
    p.add_argument("--run-to-end", action="store_true", help="do not stop at the target")
    p.add_argument("--repeats", type=int, default=1, help="runs per contender, alternating the order")
    p.add_argument("--data", choices=("synthetic", "digits"), default="synthetic",
                   help="without --root: the data to write in MNIST's format (see above)")
    p.add_argument("--n-train", type=int, default=12000, help="synthetic set only: training images")
    p.add_argument("--n-test", type=int, default=2000, help="synthetic set only: test images")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for ours, e.g. trainer.max_epochs=4")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")

    with tempfile.TemporaryDirectory(prefix="nin-tta-") as tmp:
        workdir = Path(tmp)
        if args.root is None and args.data == "digits":
            root = workdir / "data"
            write_digits_as_mnist(root)
            print("data: no --root given, so scikit-learn's real handwritten DIGITS in MNIST's format (8x8 upscaled "
                  "to 20x20 in a 28x28 frame; 1,442 train / 355 test): not MNIST; pass --root DIR for the real files")
        elif args.root is None:
            from fake_data import write_mnist

            root = workdir / "data"
            write_mnist(root, n_train=args.n_train, n_test=args.n_test, seed=0)
            print(f"data: no --root given, so SYNTHETIC MNIST-format data ({args.n_train} train / {args.n_test} "
                  "test 28x28 class-specific gratings with noise, benchmarks/fake_data.py): not MNIST; "
                  "pass --root DIR for the real files")
        else:
            root = args.root
            print(f"data: MNIST-format files under {root}/MNIST/raw")
        n_train = len(load_mnist(root, train=True)[1])
        print(f"target {100 * args.target:.1f} % test accuracy; clock = wall time from start (file loading "
              f"included, per-epoch test passes excluded); both train on all {n_train} training images, "
              f"neither validates; bounds {args.max_epochs} epochs / {args.max_seconds:.0f} s; "
              f"{torch.get_num_threads()} threads")
        if args.overrides:
            print(f"ours with the overrides {' '.join(args.overrides)} (its lines below say what it trained on)")
        results: dict[str, list[float | None]] = {"ours": [], "reference": []}
        lines: dict[str, list[str]] = {"ours": [], "reference": []}
        for r in range(args.repeats):
            order = ["ours", "reference"] if r % 2 == 0 else ["reference", "ours"]
            for name in order:
                print(f"{name} (run {r + 1}):", flush=True)
                if name == "ours":
                    rows = run_ours(root, n_train, args, workdir)
                    line, secs = summary("fast_mnist (ours)", rows, args.target)
                else:
                    rows = run_reference(root, args, seed=r)
                    line, secs = summary("100-line recipe (reference)", rows, args.target)
                results[name].append(secs)
                lines[name].append(line)
        print()
        for name in ("ours", "reference"):
            for line in lines[name]:
                print(line)
        done = {n: [s for s in v if s is not None] for n, v in results.items()}
        if done["ours"] and done["reference"]:
            ratio = statistics.median(done["reference"]) / statistics.median(done["ours"])
            print(f"speed-up (reference seconds / ours): {ratio:.2f}")


if __name__ == "__main__":
    main()
