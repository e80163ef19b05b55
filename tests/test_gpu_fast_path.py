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
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from torch.utils._python_dispatch import TorchDispatchMode

from nin_lightning.config import JobContext, validate
from tests.conftest import ROOT, cli_env, read_metrics

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
    so a window opens before any other callback's hook of that step runs.

    On a GPU, CUDA itself also refuses every sync in a step that does not log (set_sync_debug_mode("error")),
    which sees syncs inside kernels' host code too (e.g. bincount's own max().item())."""

    def __init__(self, counter: SyncCounter, quiet: Any = lambda step: False) -> None:
        self.counter, self.quiet = counter, quiet
        self.label: tuple[str, int] = ("start", 0)
        self.windows: list[tuple[str, int, list[str]]] = []

    def _open(self, kind: str, step: int) -> None:
        self.windows.append((*self.label, self.counter.ops))
        self.counter.ops, self.label = [], (kind, step)
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("error" if kind == "step" and self.quiet(step) else "default")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._open("step", trainer.global_step + 1)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._open("epoch end", trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._open("epoch end", trainer.global_step)

    def steps(self) -> dict[int, list[str]]:
        return {step: ops for kind, step, ops in self.windows if kind == "step"}


EVERY = 4  # trainer.log_every_n_steps = callbacks.check_every_n_steps: the steps that log and read flags
# where the steps run: the CPU here; on a machine with a GPU, also the GPU (the check that needs one)
DEVICES = ["cpu", *(["gpu"] if torch.cuda.is_available() else [])]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rich", [True, False], ids=["rich-bar", "tqdm-bar"])
def test_training_steps_that_do_not_log_force_no_host_sync(compose_cfg, tmp_path, rich, device):
    """Real Lightning steps (device-resident data, the run's own callbacks, a progress bar and a logger):
    only the steps that log (every EVERY-th) read anything on the host."""
    from nin_lightning.callbacks import PreemptionCheckpoint, build_callbacks
    from nin_lightning.data import build_datamodule
    from nin_lightning.run import build_model, build_trainer, load_data_early, plan_speed
    from nin_lightning.rundir import RunDir

    # eager: the counter sees each op (`model.compile=auto` is on for a GPU from sm 70, which this test refused)
    conf = validate(compose_cfg("experiment=quickstart", f"trainer={device}", "dataset.device_resident=true",
                                "model.compile=false", "model.width=0.25", "trainer.max_epochs=2",
                                f"trainer.log_every_n_steps={EVERY}", f"callbacks.check_every_n_steps={EVERY}",
                                f"callbacks.rich_progress_bar={str(rich).lower()}", "logger=csv"))
    datamodule = load_data_early(build_datamodule(conf.dataset))
    plan = plan_speed(conf, datamodule)
    assert plan.device_resident and not plan.compile
    model = build_model(conf, plan)
    run = RunDir.claim(tmp_path / "run")
    counter = SyncCounter()
    windows = StepWindows(counter, quiet=lambda step: step % EVERY != 0)
    callbacks = build_callbacks(conf.callbacks, run, "bar", True, PreemptionCheckpoint(tmp_path / "last.ckpt"))
    trainer = build_trainer(conf, plan, [windows, *callbacks], [CSVLogger(tmp_path / "csv")], run.path,
                            progress="bar")
    try:
        with counter:
            trainer.fit(model, datamodule=datamodule)
    finally:
        run.release()
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")
    steps = windows.steps()
    assert sorted(steps) == list(range(1, 2 * 19 + 1)), sorted(steps)  # 2 epochs of 1,257 // 64 steps
    quiet = {s: collections.Counter(ops) for s, ops in steps.items() if s % EVERY and ops}
    assert quiet == {}, f"host syncs in steps that do not log: {quiet}"
    # the counter sees what it looks for: the steps that log read the loss and the stop flags
    assert all(any("_local_scalar_dense" in op for op in steps[s]) for s in steps if s % EVERY == 0)
    assert float(trainer.callback_metrics["val/acc"]) > 0.4  # it learned (chance: 0.1)


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


# --- torch.compile ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["mnist", "cifar", "svhn"])
def test_nin_compiles_to_one_graph_without_breaks(preset):
    """torch._dynamo.explain on NiN as the runs use it (channels_last, bf16 autocast), train and eval mode."""
    from nin_lightning import compat, speed
    from nin_lightning.models import NiN

    channels = 1 if preset == "mnist" else 3
    net = speed.prepare_model(NiN(10, channels, preset, width=0.25), channels_last=True, compile=False)
    x = torch.randn(4, channels, 16, 16).contiguous(memory_format=torch.channels_last)
    for training in (True, False):
        net.train(training)
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(training):
            explained = compat.dynamo_explain(net, x)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def _without_compile_caches(env: dict[str, str]) -> dict[str, str]:
    """The environment less inductor's and Triton's cache dirs (inductor sets one in this process when it first
    looks), so that the run picks its own under the output root."""
    return {k: v for k, v in env.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}


def _recompiles(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "Recompiling function" in ln]


@pytest.mark.slow
@pytest.mark.parametrize("resident", [True, False], ids=["device-resident", "dataloader"])
def test_a_fit_and_test_compile_once_per_mode(run_cli, tmp_path, resident):
    """A real fit + test compiled with aot_eager (what inductor would get, without generating code): the
    sanity check, every training and validation batch, the last (smaller) ones and the test compile two
    graphs, eval and train, and nothing else (TORCH_LOGS prints each recompile and graph break)."""
    run_dir = tmp_path / "run"
    env = {**_without_compile_caches(cli_env(tmp_path)), "TORCH_LOGS": "recompiles,graph_breaks"}
    result = run_cli("experiment=quickstart", "trainer.max_epochs=2", "logger=none", "model.compile=true",
                     "model.compile_backend=aot_eager", f"dataset.device_resident={str(resident).lower()}",
                     "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["speed/compile"] is True and metrics["speed/compile_backend"] == "aot_eager"
    assert (metrics["speed/compiled_graphs"], metrics["speed/graph_breaks"]) == (2, 0), metrics
    recompiles = _recompiles(result.stderr)
    assert len(recompiles) == 1, recompiles  # the second mode; never a new batch shape
    assert "graph break" not in result.stderr.lower()
    assert metrics["test/acc"] > 0.5  # it learned (chance: 0.1)
    assert (tmp_path / "outputs" / "compile_cache").is_dir()  # the persistent cache, under the output root


@pytest.mark.slow
def test_a_compile_that_cannot_work_falls_back_at_start_in_one_line(run_cli, tmp_path):
    """A C++ toolchain that cannot build (as Triton without a C compiler or Python headers in a bare CUDA
    image): the start-up check fails, the run trains eager, says so in one line, and metrics.json says what ran."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "g++"  # answers --version like g++, fails to compile anything
    fake.write_text('#!/bin/sh\ncase "$1" in --version|-v|-dumpversion) exec /usr/bin/g++ "$@";; esac\n'
                    'echo "fatal error: Python.h: No such file or directory" >&2\nexit 1\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = _without_compile_caches(cli_env(tmp_path))
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    run_dir = tmp_path / "run"
    result = run_cli("experiment=quickstart", "trainer.max_epochs=2", "logger=none", "model.compile=true",
                     "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    said = [ln for ln in (result.stdout + result.stderr).splitlines() if "model.compile: torch.compile" in ln]
    assert len(said) == 1 and "fails on this cpu" in said[0] and said[0].endswith("running eager"), said
    assert "compile=off" in result.stdout  # the speed line: what runs
    metrics = read_metrics(run_dir)
    assert metrics["speed/compile"] is False and "speed/compiled_graphs" not in metrics
    cache = tmp_path / "outputs" / "compile_cache"  # inductor wrote the probe's C++ source there before failing
    assert any(p.is_file() for p in cache.rglob("*")), list(cache.rglob("*"))[:5]
    assert metrics["status"] == "completed" and metrics["test/acc"] > 0.5


def test_the_dockerfile_installs_what_triton_needs():
    """Triton builds a small C launcher per kernel at run time: the image needs a C compiler and Python's
    headers, or every compile fails (and, before, silently fell back to eager)."""
    text = (ROOT / "Dockerfile").read_text()
    runs = [" ".join(block.split()) for block in re.findall(r"^RUN (.*?)(?<!\\)$", text, flags=re.M | re.S)]
    installed = {word for run in runs if "apt-get install" in run for word in run.replace("\\", " ").split()}
    assert "build-essential" in installed or {"gcc", "libc6-dev"} <= installed, installed  # compiler + libc headers
    assert installed & {"python3-dev", "libpython3-dev", "python3.12-dev"}, installed


# --- auto precision on GPUs (the real torch.cuda.is_bf16_supported, on a faked device) ------------------

@pytest.mark.parametrize(("major", "expected"), [(7, "16-mixed"), (8, "bf16-mixed"), (9, "bf16-mixed")])
def test_auto_precision_gives_fp16_where_bf16_is_only_emulated(compose_cfg, monkeypatch, major, expected):
    from nin_lightning import speed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(
        major=major, minor=5, total_memory=16 << 30, name=f"fake sm{major}5"))
    # a GPU before sm80 emulates bf16: a bf16 tensor can be made there (what torch's emulation check tries)
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)
    assert torch.cuda.is_bf16_supported()  # so this says yes on every one of them (what `auto` used to ask)
    plan = speed.resolve(validate(compose_cfg("trainer=gpu")))
    assert plan.precision == expected and plan.notices == ()


# --- fixed costs per epoch ---------------------------------------------------------------------------------

class LastCheckpointSeen(Callback):
    """Whether last.ckpt exists when each epoch starts."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.seen.append(self.path.exists())


@pytest.mark.slow
def test_validation_every_n_epochs_and_the_last_and_last_ckpt_every_n_minutes(compose_cfg, tmp_path):
    """val_every_n_epochs=2 over 3 epochs validates after epochs 2 and 3 (the last), and an epoch without
    validation records none (no stale val/ values in history.csv); last.ckpt every 10 minutes is written
    once, after the last epoch."""
    import csv

    from nin_lightning.run import train

    run_dir = tmp_path / "run"
    seen = LastCheckpointSeen(run_dir / "checkpoints" / "last.ckpt")
    cfg = compose_cfg("experiment=quickstart", "logger=none", "trainer.enable_progress_bar=false", "model.width=0.25",
                      "trainer.max_epochs=3", "callbacks.val_every_n_epochs=2",
                      "callbacks.last_ckpt_every_n_minutes=10")
    train(cfg, JobContext(run_dir=run_dir), callbacks=[seen])
    with (run_dir / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [bool(r["val/acc"]) for r in rows] == [False, True, True]
    assert [bool(r["val/loss"]) for r in rows] == [False, True, True] and all(r["train/loss"] for r in rows)
    assert seen.seen == [False, False, False]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 2
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["val/acc_best"] > 0.4 and metrics["test/acc"] > 0.4


@pytest.mark.parametrize(("overrides", "words"), [
    (["callbacks.val_every_n_epochs=2", "trainer.check_val_every_n_epoch=2"], "both set how often to validate"),
    (["callbacks.val_every_n_epochs=2", "scheduler=plateau"], "needs a validation after every epoch"),
])
def test_validation_every_n_epochs_refuses_what_needs_every_epoch(compose_cfg, overrides, words):
    from nin_lightning.errors import UserError

    with pytest.raises(UserError, match=words):
        validate(compose_cfg(*overrides))


def test_fast_presets_train_at_large_batches_with_the_lr_scaled_to_match(compose_cfg):
    """Batches of 512-1024 (at 128 the framework's per-step cost alone caps a GPU: benchmarks/step_overhead.py),
    and the linear scaling rule: SGD's peak LR is 0.1 per 128 images."""
    for name in ("fast_cifar10", "fast_cifar100", "fast_svhn", "fast_mnist"):
        conf = validate(compose_cfg(f"experiment={name}"))
        assert 512 <= conf.dataset.batch_size <= 1024, name
        assert conf.optimizer.lr == pytest.approx(0.1 * conf.dataset.batch_size / 128), name


# --- DDP: disjoint device-resident shards, per-rank RNG, test_curve over all ranks --------------------------

DDP = ["trainer=ddp_cpu", "trainer.devices=2", "dataset.device_resident=true", "callbacks.test_curve=true",
       "trainer.deterministic=true", "scheduler=multistep", "scheduler.milestones=[1]", "model.width=0.5",
       "optimizer.lr=0.3",
       "logger=none", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def ddp_straight_and_resumed(tmp_path_factory) -> tuple[Path, Path]:
    """2 DDP ranks on CPU: (A) 2 epochs straight, (B) 1 epoch, then `resume=auto trainer.max_epochs=2`."""
    tmp = tmp_path_factory.mktemp("ddp")
    env = cli_env(tmp)
    a, b = tmp / "straight", tmp / "resumed"

    def cli(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *DDP, *args], cwd=tmp, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait(*procs: subprocess.Popen[str]) -> None:
        for proc in procs:
            _, err = proc.communicate(timeout=1200)
            assert proc.returncode == 0, err[-3000:]

    wait(cli("trainer.max_epochs=2", f"hydra.run.dir={a}"), cli("trainer.max_epochs=1", f"hydra.run.dir={b}"))
    wait(cli("trainer.max_epochs=2", "resume=auto", f"hydra.run.dir={b}"))
    return a, b


@pytest.mark.slow
def test_ddp_device_resident_shards_and_test_curve_over_all_ranks(ddp_straight_and_resumed):
    """Each rank trains on its own half in whole batches (digits: 1,257 training images -> 628 per rank ->
    9 batches of 64), and test_curve.csv holds the whole test set's accuracy (summed over both ranks'
    shards), the one a single process computes from the same weights."""
    import csv

    from tests.test_scale_resume import single_process_test_acc

    straight, _ = ddp_straight_and_resumed
    metrics = read_metrics(straight)
    assert metrics["status"] == "completed" and metrics["speed/device_resident"] is True
    assert metrics["global_step"] == 2 * ((1257 // 2) // 64)
    with (straight / "test_curve.csv").open() as fh:
        curve = [float(row["test_acc"]) for row in csv.DictReader(fh)]
    acc, n = single_process_test_acc(straight, "last.ckpt")  # the weights after the last epoch, as in the curve
    assert len(curve) == 2 and curve[-1] == pytest.approx(acc, abs=0.5 / n), (curve, acc)
    assert metrics["test/acc"] > 0.2  # it learned: twice chance (0.1) in its 18 steps (measured: 0.24)


@pytest.mark.slow
def test_ddp_resume_restores_each_ranks_rng_bit_for_bit(ddp_straight_and_resumed):
    """With per-rank seeds, rank 1 draws its own dropout masks; its RNG state goes into the checkpoint (gathered
    from every rank) and comes back on resume: 1 epoch + resume == 2 epochs straight, bit for bit."""
    straight, resumed = ddp_straight_and_resumed
    a, b = (torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
            for d in (straight, resumed))
    assert len(b["callbacks"]["RNGState"]["ranks"]) == 2
    assert not torch.equal(*b["callbacks"]["RNGState"]["ranks"])  # two ranks, two RNG states
    assert a["global_step"] == b["global_step"]
    unequal = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert unequal == [], f"the resumed DDP run differs: {unequal[:5]}"


def test_ranks_above_zero_reseed_torch_for_their_own_dropout(monkeypatch):
    """Every rank is seeded alike (the weights must start equal); at setup, ranks > 0 reseed torch by
    (seed, rank): rank 0, and a single process, keep the run's stream."""
    from nin_lightning.callbacks import RNGState

    monkeypatch.setenv("PL_GLOBAL_SEED", "42")

    def draws(rank: int) -> torch.Tensor:
        torch.manual_seed(42)
        RNGState().setup(SimpleNamespace(global_rank=rank, world_size=3), None, "fit")
        return torch.nn.functional.dropout(torch.ones(64), 0.5)

    rank0, rank1, rank2 = draws(0), draws(1), draws(2)
    torch.manual_seed(42)
    assert torch.equal(rank0, torch.nn.functional.dropout(torch.ones(64), 0.5))
    assert not torch.equal(rank0, rank1) and not torch.equal(rank1, rank2) and torch.equal(draws(1), rank1)


def test_ddp_leaves_batchnorm_per_gpu_unless_asked(compose_cfg):
    """SyncBatchNorm all-gathers in each of NiN's 9 BN layers on every forward: opt-in only."""
    assert validate(compose_cfg("trainer=ddp")).trainer.sync_batchnorm is False
    assert validate(compose_cfg("trainer=ddp", "trainer.sync_batchnorm=true")).trainer.sync_batchnorm is True


def test_an_unknown_compile_backend_is_one_line_before_any_work(run_cli, tmp_path):
    result = run_cli("model.compile=true", "model.compile_backend=inductr", "logger=none",
                     f"hydra.run.dir={tmp_path / 'run'}", timeout=300)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert result.returncode != 0 and len(lines) == 1, result.stderr[-2000:]
    assert "model.compile_backend='inductr'" in lines[0] and "aot_eager" in lines[0]
    assert not list((tmp_path / "run").rglob("*"))  # nothing written (Hydra made the empty dir, as for any error)
