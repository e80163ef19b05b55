"""The ceiling the framework's own per-step cost puts on a GPU: time per training step with a model too small
to matter, and the images/s that cost alone allows, at batch 128, 512 and 1024.

Three contenders train the same tiny model (one Linear layer on digits-shaped 1x8x8 images) on the same
device-resident synthetic uint8 data (`dataset.device_resident`: a batch is one indexing op on the device),
with the same batched augmentation, optimizer and per-step LR schedule:

(a) plain: a PyTorch loop (forward, loss, backward, optimizer and scheduler step, accuracy sums on device);
(b) Lightning: a minimal LightningModule under a bare Trainer (no callbacks, logger or progress bar);
(c) ours: the project's NiNClassifier (its NiN swapped for the tiny model) under the run's own Trainer,
    callbacks and a CSV logger, as `python train.py` builds them.

(b) - (a) is Lightning's part of the per-step cost, (c) - (b) ours. A GPU step of NiN at batch B takes
about B / 100k s on an H100 (1.34 GFLOP per trained image, memory-bound near 100k images/s), so a host
cost per step above that caps the run below the GPU's speed. Runs of --steps steps, the first --skip left
out; contenders interleaved (a shared machine's load hits all alike); medians of --repeats runs. The last
line, `ratio:`, is (a)'s step time over (c)'s at the first batch size: 1.0 would mean the framework costs
nothing per step.

    python benchmarks/step_overhead.py [--batches 128 512 1024] [--steps 60] [--skip 10] [--repeats 5]
                                       [--device cpu|cuda] [--threads 1]

Not a timed test: numbers depend on the machine and on what else runs on it.
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
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import lightning as L  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from overhead import InMemory, compose_conf  # noqa: E402

from nin_lightning import speed  # noqa: E402
from nin_lightning.callbacks import PreemptionCheckpoint, build_callbacks  # noqa: E402
from nin_lightning.config import TrainConfig  # noqa: E402
from nin_lightning.data.resident import DeviceBatches  # noqa: E402
from nin_lightning.optim import build_optimizer, build_scheduler  # noqa: E402
from nin_lightning.run import build_model, build_trainer  # noqa: E402
from nin_lightning.rundir import RunDir  # noqa: E402


def tiny_net(conf: TrainConfig) -> nn.Module:
    """A model too small to matter: one Linear layer on the flattened image."""
    d = conf.dataset
    return nn.Sequential(nn.Flatten(), nn.Linear(d.in_channels * d.image_size ** 2, d.num_classes))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def optimizer_and_schedule(net: nn.Module, conf: TrainConfig, plan: speed.SpeedPlan, steps: int) -> dict[str, Any]:
    """The run's optimizer and per-step LR schedule, for the tiny model."""
    optimizer = build_optimizer(net, conf.optimizer, lr=conf.optimizer.lr, implementation=plan.optimizer_impl)
    return {"optimizer": optimizer, "lr_scheduler": build_scheduler(optimizer, conf.scheduler, 1, steps)}


class Timer(Callback):
    """Seconds from the start of step SKIP to the end of the last step (listed first: before any other hook)."""

    def __init__(self, skip: int, steps: int, device: torch.device) -> None:
        self.skip, self.steps, self.device = skip, steps, device
        self.started = self.seconds = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int) -> None:
        if i == self.skip:
            sync(self.device)
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_idx == self.steps - 1:
            sync(self.device)
            self.seconds = time.perf_counter() - self.started


class Bare(L.LightningModule):
    """The least a LightningModule does: forward, loss, the optimizer and its schedule."""

    def __init__(self, net: nn.Module, conf: TrainConfig, plan: speed.SpeedPlan, steps: int) -> None:
        super().__init__()
        self.net, self.conf, self.plan, self.steps = net, conf, plan, steps

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        return nn.functional.cross_entropy(self.net(images), labels)

    def configure_optimizers(self) -> Any:
        return optimizer_and_schedule(self.net, self.conf, self.plan, self.steps)


def plain(conf: TrainConfig, plan: speed.SpeedPlan, dm: InMemory, steps: int, skip: int, device: torch.device
          ) -> float:
    torch.manual_seed(0)
    net = tiny_net(conf).to(device)
    parts = optimizer_and_schedule(net, conf, plan, steps)
    optimizer, scheduler = parts["optimizer"], parts["lr_scheduler"]["scheduler"]
    split = dm.train_split
    batches = iter(DeviceBatches(split.images.to(device), split.labels.to(device), conf.dataset.batch_size,
                                 shuffle=True))
    autocast = plan.precision.startswith(("bf16", "16"))
    dtype = torch.bfloat16 if plan.precision.startswith("bf16") else torch.float16
    correct = torch.zeros((), dtype=torch.long, device=device)
    started = 0.0
    for i in range(steps):
        if i == skip:
            sync(device)
            started = time.perf_counter()
        images, labels = next(batches)
        x = dm.transform_batch(images, training=True)
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            logits = net(x)
            loss = nn.functional.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        correct += (logits.argmax(1) == labels).sum()
    sync(device)
    return time.perf_counter() - started


def lightning(conf: TrainConfig, plan: speed.SpeedPlan, dm: InMemory, steps: int, skip: int, device: torch.device,
              ours: bool, tmp: Path) -> float:
    torch.manual_seed(0)
    timer = Timer(skip, steps, device)
    if not ours:
        trainer = L.Trainer(accelerator=device.type, devices=1, max_epochs=1, limit_train_batches=steps,
                            limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, precision=plan.precision,
                            callbacks=[timer], default_root_dir=tmp)
        trainer.fit(Bare(tiny_net(conf), conf, plan, steps), datamodule=dm)
        return timer.seconds
    module = build_model(conf, plan)
    module.net = tiny_net(conf)  # the run's module, around a model too small to matter
    run = RunDir.claim(tmp / "run")
    try:
        callbacks = build_callbacks(conf.callbacks, run, "none", True, PreemptionCheckpoint(tmp / "last.ckpt"))
        trainer = build_trainer(conf, plan, [timer, *callbacks], [CSVLogger(tmp / "csv")], run.path, progress="none")
        with contextlib.redirect_stdout(io.StringIO()):  # the run's model summary table, once per fit
            trainer.fit(module, datamodule=dm)
    finally:
        run.release()
    return timer.seconds


def measure(batches: list[int], steps: int, skip: int, repeats: int, device: torch.device
            ) -> list[tuple[int, dict[str, float]]]:
    """For each batch size: the median seconds per step of "plain", "lightning" and "ours" over REPEATS runs of
    STEPS steps (the first SKIP not timed), after one untimed warm-up run (allocator, kernels, lazy imports)."""
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.ERROR)  # no per-fit banners
    trainer = "gpu" if device.type == "cuda" else "cpu"
    rows = []
    with tempfile.TemporaryDirectory(prefix="nin-step-overhead-") as tmp:
        for batch in batches:
            conf = compose_conf("digits", batch, [f"trainer={trainer}", "dataset.device_resident=true", "logger=csv",
                                                  "model.compile=false"])
            conf.trainer.limit_train_batches, conf.trainer.limit_val_batches = steps, 0
            conf.trainer.num_sanity_val_steps = 0
            plan = replace(speed.resolve(conf), device_resident=True)
            dm = InMemory(conf, n=steps * batch)
            dm.setup("fit")
            dm.use_plan(device_resident=True, static_shapes=False)
            seconds: dict[str, list[float]] = {"plain": [], "lightning": [], "ours": []}
            for r in range(repeats + 1):
                run = {"plain": plain(conf, plan, dm, steps, skip, device),
                       "lightning": lightning(conf, plan, dm, steps, skip, device, False, Path(tmp) / "l"),
                       "ours": lightning(conf, plan, dm, steps, skip, device, True, Path(tmp) / f"o{r}")}
                if r:
                    for name, s in run.items():
                        seconds[name].append(s / (steps - skip))
            rows.append((batch, {name: statistics.median(v) for name, v in seconds.items()}))
    lightning_log.setLevel(level)
    return rows


def ceiling(batch: int, t: dict[str, float]) -> str:
    """The images/s the framework's per-step cost alone allows (ours - plain, per step of BATCH images)."""
    overhead = t["ours"] - t["plain"]
    return f"{batch / overhead:,.0f} img/s" if overhead > 0 else "no limit measured"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[128, 512, 1024])
    p.add_argument("--steps", type=int, default=60, help="training steps per run")
    p.add_argument("--skip", type=int, default=10, help="first steps of each run left out of the clock (>= 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads: 1 by default, so that a tiny op is not a thread barrier on a busy machine")
    args = p.parse_args()
    if not 1 <= args.skip < args.steps:
        p.error("--skip must be at least 1 and less than --steps")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"a model too small to matter (one Linear layer, digits-shaped 1x8x8 uint8 on the device), {device.type}, "
          f"{torch.get_num_threads()} threads; median of {args.repeats} runs of {args.steps} steps, the first "
          f"{args.skip} not timed")
    rows = measure(args.batches, args.steps, args.skip, args.repeats, device)
    print(f"{'batch':>5}  {'plain loop':>22}  {'Lightning (bare)':>22}  {'ours (the run)':>22}  "
          f"{'Lightning part':>14}  {'our part':>9}  overhead alone allows")
    for batch, t in rows:
        cells = "  ".join(f"{1e3 * t[n]:7.3f} ms {batch / t[n]:9,.0f}/s" for n in ("plain", "lightning", "ours"))
        print(f"{batch:>5}  {cells}  {1e3 * (t['lightning'] - t['plain']):11.3f} ms  "
              f"{1e3 * (t['ours'] - t['lightning']):6.3f} ms  {ceiling(batch, t)}")
    first = rows[0][1]
    print(f"ratio: {first['plain'] / first['ours']:.3f}")


if __name__ == "__main__":
    main()
