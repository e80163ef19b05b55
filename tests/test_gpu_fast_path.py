"""The GPU fast path, checked on a CPU (issue 16): what a GPU run would do is counted or compiled here.

- host syncs: a TorchDispatchMode sees every op of real Lightning training steps and counts those that
  make the host wait for the device (`.item()`/`bool()`, data-dependent shapes, tensors made from host
  data, copies between devices); a step that does not log must have none;
- device-resident data: shards, order, an exact resume mid-epoch;
- torch.compile with backend aot_eager: no graph breaks in NiN, one compile per mode over a fit + test, and
  a compile that cannot work falls back at start in one line;
- the Dockerfile installs what Triton needs; `auto` precision on GPUs with and without native bf16.
"""

from __future__ import annotations

import collections
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from torch.utils._python_dispatch import TorchDispatchMode

from nin_lightning.config import JobContext, validate
from tests.conftest import read_metrics

aten = torch.ops.aten
# ops that make the host wait for the device: a value read on the host, a data-dependent output shape
# (the host must learn the size), a tensor made from host data (a blocking host-to-device copy on CUDA)
SYNC_OPS = {aten._local_scalar_dense, aten.item, aten.is_nonzero, aten.equal, aten.nonzero, aten.masked_select,
            aten.unique_dim, aten._unique2, aten.unique_consecutive, aten.bincount, aten.lift_fresh,
            aten.lift_fresh_copy}
INDEXING = {aten.index, aten.index_put, aten.index_put_}


def forces_sync(func: Any, args: tuple, kwargs: dict) -> bool:
    packet = func.overloadpacket
    if packet in SYNC_OPS:
        return True
    if packet in INDEXING:  # a boolean mask index is a nonzero() inside
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())
    if packet is aten._to_copy:  # to another device
        device = kwargs.get("device")
        return device is not None and torch.device(device) != args[0].device
    if packet is aten.copy_:
        return args[0].device != args[1].device
    return False


class SyncCounter(TorchDispatchMode):
    """Every op that forces a host sync, in the current window's list."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if forces_sync(func, args, kwargs):
            self.ops.append(str(func))
        return func(*args, **kwargs)


class StepWindows(Callback):
    """Splits the fit into windows: one per training step (from its on_train_batch_start to the next one,
    so its logging and the next batch's fetch and augmentation are in it) and the epoch ends. Listed first,
    so a window opens before any other callback's hook of that step runs."""

    def __init__(self, counter: SyncCounter) -> None:
        self.counter = counter
        self.label: tuple[str, int] = ("start", 0)
        self.windows: list[tuple[str, int, list[str]]] = []

    def _open(self, kind: str, step: int) -> None:
        self.windows.append((*self.label, self.counter.ops))
        self.counter.ops, self.label = [], (kind, step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._open("step", trainer.global_step + 1)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._open("epoch end", trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._open("epoch end", trainer.global_step)

    def steps(self) -> dict[int, list[str]]:
        return {step: ops for kind, step, ops in self.windows if kind == "step"}


EVERY = 4  # trainer.log_every_n_steps = callbacks.check_every_n_steps: the steps that log and read flags


@pytest.mark.slow
@pytest.mark.parametrize("rich", [True, False], ids=["rich-bar", "tqdm-bar"])
def test_training_steps_that_do_not_log_force_no_host_sync(compose_cfg, tmp_path, rich):
    """Real Lightning steps on the CPU (device-resident data, the run's own callbacks, a progress bar and a
    logger): only the steps that log (every EVERY-th) read anything on the host."""
    from nin_lightning.callbacks import PreemptionCheckpoint, build_callbacks
    from nin_lightning.data import build_datamodule
    from nin_lightning.run import build_model, build_trainer, load_data_early, plan_speed
    from nin_lightning.rundir import RunDir

    conf = validate(compose_cfg("experiment=quickstart", "dataset.device_resident=true", "model.width=0.25",
                                "trainer.max_epochs=2", "trainer.limit_train_batches=10",
                                f"trainer.log_every_n_steps={EVERY}", f"callbacks.check_every_n_steps={EVERY}",
                                f"callbacks.rich_progress_bar={str(rich).lower()}", "logger=csv"))
    datamodule = load_data_early(build_datamodule(conf.dataset))
    plan = plan_speed(conf, datamodule)
    assert plan.device_resident and not plan.compile
    model = build_model(conf, plan)
    run = RunDir.claim(tmp_path / "run")
    counter = SyncCounter()
    windows = StepWindows(counter)
    callbacks = build_callbacks(conf.callbacks, run, "bar", True, PreemptionCheckpoint(tmp_path / "last.ckpt"))
    trainer = build_trainer(conf, plan, [windows, *callbacks], [CSVLogger(tmp_path / "csv")], run.path,
                            progress="bar")
    try:
        with counter:
            trainer.fit(model, datamodule=datamodule)
    finally:
        run.release()
    steps = windows.steps()
    assert sorted(steps) == list(range(1, 21)), sorted(steps)
    quiet = {s: collections.Counter(ops) for s, ops in steps.items() if s % EVERY and ops}
    assert quiet == {}, f"host syncs in steps that do not log: {quiet}"
    # the counter sees what it looks for: the steps that log read the loss and the stop flags
    assert all(any("_local_scalar_dense" in op for op in steps[s]) for s in steps if s % EVERY == 0)
    assert float(trainer.callback_metrics["val/acc"]) > 0.3  # it learned (chance: 0.1)


# --- device-resident data ---------------------------------------------------------------------------------

def _labels(loader) -> list[torch.Tensor]:
    return [labels for _, labels in loader]


def test_device_batches_shard_disjointly_replay_their_order_and_resume_within_an_epoch():
    from nin_lightning.data.resident import DeviceBatches

    n, batch, world = 103, 8, 3
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)
    labels = torch.arange(n)
    epoch = {"now": 0}

    def shard(rank: int, **kw) -> DeviceBatches:
        return DeviceBatches(images, labels, batch, shuffle=True, seed=7, rank=rank, world=world,
                             epoch=lambda: epoch["now"], **kw)

    ranks = [torch.cat(_labels(shard(r))) for r in range(world)]
    assert [len(r) for r in ranks] == [32] * world  # 34 each, in whole batches of 8: the same steps on every rank
    assert all(len(b) == batch for b in _labels(shard(0)))  # drop_last: one shape
    together = torch.cat(ranks)
    assert len(together.unique()) == len(together)  # disjoint
    assert torch.equal(images[together].flatten().long(), together)  # images and labels stay paired
    first = torch.cat(_labels(shard(0)))
    assert torch.equal(torch.cat(_labels(shard(0))), first)  # an epoch's order replays without state
    epoch["now"] = 1
    assert not torch.equal(torch.cat(_labels(shard(0))), first)  # a new order each epoch

    # resumed within epoch 1 after 2 of its batches (the Trainer's restored progress): the rest of the same order
    full = _labels(shard(0))
    rest = _labels(shard(0, position=lambda: 2))
    assert len(rest) == len(full) - 2 and all(torch.equal(a, b) for a, b in zip(rest, full[2:], strict=True))

    # evaluation: every image once over the ranks, in order, unpadded
    evals = [torch.cat(_labels(DeviceBatches(images, labels, batch, shuffle=False, rank=r, world=world)))
             for r in range(world)]
    assert sorted(torch.cat(evals).tolist()) == list(range(n))
    assert [e.tolist() for e in evals] == [list(range(r, n, world)) for r in range(world)]


class SignalAt(Callback):
    """Sends this process SIGTERM at the end of training step STEP (as Slurm's preemption would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_a_preempted_device_resident_run_resumes_mid_epoch_bit_for_bit(compose_cfg, tmp_path):
    """2 epochs straight == the same run preempted in the middle of epoch 2 and resumed: the batch order,
    augmentations and dropout masks after the resume are the ones the straight run drew. last.ckpt is
    written every 10 minutes only, yet the preemption saves at once."""
    from nin_lightning.run import train

    common = ["experiment=quickstart", "dataset.device_resident=true", "model.width=0.25", "trainer.max_epochs=2",
              "trainer.deterministic=true", "logger=none", "trainer.enable_progress_bar=false",
              "callbacks.last_ckpt_every_n_minutes=10"]
    straight, preempted = tmp_path / "straight", tmp_path / "preempted"
    train(compose_cfg(*common), JobContext(run_dir=straight))
    with pytest.raises(SystemExit) as stopped:
        train(compose_cfg(*common), JobContext(run_dir=preempted), callbacks=[SignalAt(25)])
    assert stopped.value.code == 143 and read_metrics(preempted)["status"] == "preempted"
    saved = torch.load(preempted / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    steps_per_epoch = 1257 // 64  # digits' training split, whole batches
    assert saved["epoch"] == 1 and steps_per_epoch < saved["global_step"] < 2 * steps_per_epoch  # mid-epoch 2
    train(compose_cfg(*common, "resume=auto"), JobContext(run_dir=preempted))
    a, b = (torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
            for d in (straight, preempted))
    assert a["global_step"] == b["global_step"] == 2 * steps_per_epoch
    unequal = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert unequal == [], f"the resumed run differs: {unequal[:5]}"
    assert read_metrics(straight)["test/acc"] > 0.5  # it learned (chance: 0.1)
