"""What Lightning costs: the project's LightningModule + Trainer against a plain PyTorch loop, in one run.

Both contenders train the same NiN (built from the same composed config, speed switches included) for
the same number of steps, on the same synthetic uint8 images held in memory, through the same DataLoader
and the same batched augmentation (`NiNDataModule.transform_batch`, what `on_after_batch_transfer` runs),
with the same optimizer, per-step LR schedule, loss and a running training accuracy:

(a) Lightning: `NiNClassifier` from `run.build_model`, a `lightning.Trainer` with the config's trainer
    settings and our FiniteLossGuard; no logger, no progress bar, no checkpointing, no validation;
(b) plain: forward, loss, backward, optimizer.step, scheduler.step, zero_grad, accuracy sums on device.

The two run in lock-step, so that the load of a shared machine hits both alike: after each Lightning
training step, a callback runs one plain step. Each side's clock counts its own steps only (Lightning's
from the end of the previous plain step: its loop, data fetch and transfer hooks, hooks and logging
included), leaving out the first --skip steps (warm-up); Lightning's one-off cost per `fit` (Trainer
construction, set-up, tear-down) is printed separately. A run is --steps steps of each; after one
untimed warm-up run, --repeats runs give the medians of images/s and `ratio: X`, the median of
(Lightning images/s) / (plain images/s) per run: higher is better, 1.0 means Lightning costs nothing.

    python benchmarks/overhead.py [--dataset cifar10|mnist|digits] [--batch 128] [--steps 12] [--repeats 5]

Measured on the project's shared 2-core AMD EPYC (see README, "Speed"): about 1.0 CIFAR- and MNIST-shaped,
0.93 digits-shaped (8x8 images: a 20 ms step, of which Lightning's own loop takes ~1.4 ms).
Not a timed test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lightning as L  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from nin_lightning import speed  # noqa: E402
from nin_lightning.callbacks import FiniteLossGuard  # noqa: E402
from nin_lightning.config import TrainConfig, register_configs, validate  # noqa: E402
from nin_lightning.data.base import NiNDataModule, Split  # noqa: E402
from nin_lightning.optim import build_optimizer, build_scheduler  # noqa: E402
from nin_lightning.run import build_model  # noqa: E402

CPU = torch.device("cpu")


class InMemory(NiNDataModule):
    """The project's DataModule over synthetic uint8 images (no files); validation is not used here."""

    def __init__(self, conf: TrainConfig, n: int, seed: int = 0) -> None:
        super().__init__(conf.dataset)
        g = torch.Generator().manual_seed(seed)
        d = conf.dataset
        images = torch.randint(0, 256, (n, d.in_channels, d.image_size, d.image_size), generator=g,
                               dtype=torch.uint8)
        labels = torch.randint(0, d.num_classes, (n,), generator=g)
        self._split = Split(images, labels)

    def load(self) -> tuple[Split, Split]:
        return self._split, self._split

    def split_val(self, train: Split) -> tuple[Split, Split]:
        return train, train.subset(torch.arange(min(len(train), 64)))


def compose_cfg(overrides: list[str]) -> DictConfig:
    """The task config `python train.py OVERRIDES` runs (no `hydra` node)."""
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def compose_conf(dataset: str, batch: int, overrides: list[str]) -> TrainConfig:
    conf = validate(compose_cfg([f"dataset={dataset}", "trainer=cpu", "logger=none", f"dataset.batch_size={batch}",
                                 *overrides]))
    conf.trainer.max_epochs = 1
    return conf


def fresh_model(conf: TrainConfig, plan: speed.SpeedPlan, seed: int):
    torch.manual_seed(seed)
    return build_model(conf, plan)


class PlainLoop:
    """The plain PyTorch loop, one training step per `step()` call (each call times itself).

    `device`: where it trains; `loader`: its training batches (default: the DataModule's loader), restarted by
    `start_epoch()`. fp16 (`16-mixed`) scales the loss with a GradScaler, as Lightning does."""

    def __init__(self, conf: TrainConfig, plan: speed.SpeedPlan, dm: NiNDataModule, steps: int, seed: int,
                 device: torch.device = CPU, loader: Iterable | None = None) -> None:
        # the same nn.Module (channels_last/compile applied)
        self.net = fresh_model(conf, plan, seed).net.to(device)
        self.dm, self.device = dm, device
        self.net.train()
        self.optimizer = build_optimizer(self.net, conf.optimizer, lr=conf.optimizer.lr,
                                         implementation=plan.optimizer_impl)
        sched = build_scheduler(self.optimizer, conf.scheduler, 1, steps)
        self.scheduler = sched["scheduler"] if sched and sched["interval"] == "step" else None
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=conf.model.label_smoothing)
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), dtype=torch.long, device=self.device)
        self.images = 0  # trained on, all steps
        self.channels_last = plan.channels_last
        precision = plan.precision
        self.autocast = precision.startswith(("bf16", "16"))
        self.dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
        self.scaler = torch.amp.GradScaler(device.type) if precision.startswith("16") else None
        self.loader = dm.train_dataloader() if loader is None else loader
        self.start_epoch()

    def start_epoch(self) -> None:
        self.batches = iter(self.loader)

    def step(self) -> float:
        started = time.perf_counter()
        images, labels = next(self.batches)
        images, labels = images.to(self.device), labels.to(self.device)
        x = self.dm.transform_batch(images, training=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            logits = self.net(x)
            loss = self.loss_fn(logits, labels)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        self.loss_sum += loss.detach()
        self.correct += (logits.argmax(1) == labels).sum()
        self.images += len(labels)
        return time.perf_counter() - started

    def finish(self) -> None:
        _ = float(self.loss_sum), int(self.correct)  # what a plain loop reports at the end of the epoch


class LockStep(Callback):
    """After each Lightning training step, one plain step: both see the same moment of a shared machine.

    Lightning's time for step i runs from the end of the plain step after step i-1 to the end of step i
    (its loop, data fetch and transfer hooks, forward/backward/optimizer, logging and hooks)."""

    def __init__(self, plain: PlainLoop, skip: int) -> None:
        self.plain, self.skip = plain, skip
        self.lightning = self.plain_time = 0.0
        self.mark = self.fit_start = self.first_step = self.last_step = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int) -> None:
        if i == 0:
            self.first_step = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        now = time.perf_counter()
        i = trainer.fit_loop.epoch_loop.batch_idx
        if i >= self.skip:
            self.lightning += now - self.mark
        seconds = self.plain.step()
        if i >= self.skip:
            self.plain_time += seconds
        self.mark = self.last_step = time.perf_counter()


def run_pair(conf: TrainConfig, plan: speed.SpeedPlan, dm: InMemory, steps: int, skip: int, seed: int
             ) -> dict[str, float]:
    """One Lightning fit with a plain step after each of its steps: seconds for steps skip..steps-1 of each,
    and Lightning's one-off seconds per fit (Trainer construction, set-up before and tear-down after the steps)."""
    module = fresh_model(conf, plan, seed)
    plain = PlainLoop(conf, plan, dm, steps, seed)
    kwargs = asdict(conf.trainer) | {"precision": plan.precision, "benchmark": plan.benchmark, "max_epochs": 1,
                                     "limit_train_batches": steps, "limit_val_batches": 0,
                                     "num_sanity_val_steps": 0, "enable_progress_bar": False}
    lockstep = LockStep(plain, skip)
    started = time.perf_counter()
    trainer = L.Trainer(**kwargs, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        callbacks=[FiniteLossGuard(), lockstep])
    trainer.fit(module, datamodule=dm)
    ended = time.perf_counter()
    plain.finish()
    assert trainer.global_step == steps, trainer.global_step
    one_off = (lockstep.first_step - started) + (ended - lockstep.last_step)
    return {"lightning": lockstep.lightning, "plain": lockstep.plain_time, "one_off": one_off}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "mnist", "digits"],
                   help="image shape, NiN preset and augmentation of this dataset option (data are synthetic)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=12, help="training steps per run, of each contender")
    p.add_argument("--skip", type=int, default=2, help="first steps of each run left out of the clock (>= 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs (each: --steps steps of each contender)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--profile", action="store_true", help="cProfile one Lightning run and print the top entries")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. model.channels_last=false")
    args = p.parse_args()
    if not 1 <= args.skip < args.steps:
        p.error("--skip must be at least 1 and less than --steps")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-fit banners
    if args.threads:
        torch.set_num_threads(args.threads)

    conf = compose_conf(args.dataset, args.batch, args.overrides)
    plan = speed.resolve(conf)
    dm = InMemory(conf, n=args.steps * args.batch)
    dm.setup("fit")
    print(f"NiN ({conf.model.preset} preset, batch_norm={conf.model.batch_norm}), {args.dataset}-shaped synthetic "
          f"uint8, batch {args.batch}; {args.repeats} runs of {args.steps} lock-step steps each, the last "
          f"{args.steps - args.skip} timed; {torch.get_num_threads()} threads")
    print(plan.summary())

    if args.profile:
        import cProfile
        import pstats

        run_pair(conf, plan, dm, 3, 1, seed=0)
        prof = cProfile.Profile()
        prof.runcall(run_pair, conf, plan, dm, args.steps, args.skip, 0)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return

    run_pair(conf, plan, dm, 3, 1, seed=0)  # warm-up: allocator, oneDNN primitive caches, lazy imports
    images = (args.steps - args.skip) * args.batch
    rates: dict[str, list[float]] = {"lightning": [], "plain": []}
    ratios, one_off = [], []
    for r in range(args.repeats):
        t = run_pair(conf, plan, dm, args.steps, args.skip, seed=r)
        for name in rates:
            rates[name].append(images / t[name])
        ratios.append(t["plain"] / t["lightning"])
        one_off.append(t["one_off"])
        print(f"  run {r + 1}: " + "  ".join(f"{n} {rates[n][-1]:7.1f} img/s" for n in rates)
              + f"  ratio {ratios[-1]:.3f}", flush=True)
    for name in rates:
        print(f"{name:9s}: {statistics.median(rates[name]):8.1f} images/s (median of {args.repeats} runs)")
    print(f"Lightning's one-off cost per fit (Trainer, set-up, tear-down; not in images/s): "
          f"{statistics.median(one_off):.2f} s")
    print(f"ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
