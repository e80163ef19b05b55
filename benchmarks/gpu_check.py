"""Every check that needs a GPU (docs/gpu-fast-path.md, docs/speed.md), in one command and one table.

    python benchmarks/gpu_check.py                 # or `make gpu-check`: on one CUDA GPU
    python benchmarks/gpu_check.py --device cpu    # dry run: each check tiny, on the CPU (tests/test_gpu_check.py)

Without a CUDA GPU (and without --device cpu) it says so in one line and exits 0. Otherwise it prints one
table (check, result, figure) and exits 1 when a check failed. The checks (what fails them):

host sync          tests/test_gpu_fast_path.py's host-sync test, its gpu cases: CUDA's sync debug mode is
                   "error" in every training step that does not log (a pytest subprocess; fails unless both
                   cases are selected and pass)
compile            a real fit + test of experiment=fast_cifar10 (below), compiled as `auto` decides (inductor):
                   fails unless it compiled (no fallback to eager), 2 graphs, 0 graph breaks, 1 recompile
data pipeline      benchmarks/data_pipeline.py's two project paths on the GPU: fails when the device-resident
                   one delivers fewer images/s than the DataLoader one (resident ratio < 1)
step overhead      benchmarks/step_overhead.py on the GPU, batches 128 and 512 (figures only)
precision, NHWC    the same fit: the Trainer's precision is what docs/speed.md says `auto` gives on this GPU
                   (bf16-mixed from sm 80, else 16-mixed) and the weights are channels_last (sm >= 70)
fast_cifar10       the same fit, on CIFAR-10-sized files written here in torchvision's exact format
                   (benchmarks/fake_data.py: no download), trains at N images/s (its epochs after the first,
                   which compiles) and a plain PyTorch loop (benchmarks/overhead.py PlainLoop: the same model,
                   data and GPU, no Lightning) at M: the ratio N/M is printed, not judged; fails unless the run
                   completed and learned (test accuracy > 0.5; chance 0.1)

--device cpu runs the same code tiny on the CPU (compile with aot_eager, the host-sync test's cpu case):
its figures mean nothing and the speed figures are not judged; it is there so that the checks cannot rot.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import data_pipeline  # noqa: E402
import step_overhead  # noqa: E402
from fake_data import trust_fake_md5, write_cifar10  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from overhead import PlainLoop, compose_cfg  # noqa: E402

from nin_lightning import compat, speed  # noqa: E402
from nin_lightning.config import JobContext, validate  # noqa: E402
from nin_lightning.data import build_datamodule  # noqa: E402
from nin_lightning.data.resident import DeviceBatches  # noqa: E402
from nin_lightning.errors import one_line  # noqa: E402
from nin_lightning.run import load_data_early, plan_speed, train  # noqa: E402

NO_GPU = ("gpu-check: no CUDA GPU here (torch.cuda.is_available() is false), so nothing was checked; "
          "`--device cpu` runs every check tiny on the CPU")
LEARNED = 0.5  # test accuracy the fast_cifar10 run must beat (chance: 0.1)


@dataclass(frozen=True)
class Sizes:
    """How big each check runs: on the GPU (the real check) or dry on the CPU (seconds)."""

    host_sync: str  # pytest -k selection in tests/test_gpu_fast_path.py
    host_sync_cases: int  # tests it must select and pass
    cifar_per_batch: int  # images in each of CIFAR-10's 5 training files
    cifar_test: int
    fit: tuple[str, ...]  # overrides of experiment=fast_cifar10
    pipeline_images: int
    pipeline_epochs: int
    overhead_batches: tuple[int, ...]
    overhead_steps: int
    overhead_skip: int
    overhead_repeats: int


GPU = Sizes(host_sync="host_sync and gpu", host_sync_cases=2, cifar_per_batch=10_000, cifar_test=10_000,
            fit=("trainer=gpu", "trainer.max_epochs=4"), pipeline_images=10_000, pipeline_epochs=3,
            overhead_batches=(128, 512), overhead_steps=60, overhead_skip=10, overhead_repeats=3)
DRY = Sizes(host_sync="host_sync and cpu and tqdm", host_sync_cases=1, cifar_per_batch=64, cifar_test=64,
            fit=("trainer=cpu", "trainer.max_epochs=3", "dataset.batch_size=32", "dataset.eval_batch_size=64",
                 "dataset.val_size=64", "model.width=0.25", "model.compile=true", "model.compile_backend=aot_eager",
                 "optimizer.lr=0.1"),
            pipeline_images=512, pipeline_epochs=1, overhead_batches=(16,), overhead_steps=4, overhead_skip=1,
            overhead_repeats=1)


class Watch(Callback):
    """What a fit did: the Trainer's precision and the weights' memory format at the first step, and each
    training epoch's images and seconds (first batch's start to last batch's end, the device synced)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.precision: str | None = None
        self.channels_last: bool | None = None
        self.epochs: list[tuple[int, float]] = []
        self._images, self._started = 0, 0.0

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.precision is None:
            self.precision = str(trainer.precision)
            convs = [p for p in pl_module.parameters() if p.dim() == 4]
            self.channels_last = bool(convs) and all(p.is_contiguous(memory_format=torch.channels_last)
                                                      for p in convs)
        if batch_idx == 0:
            step_overhead.sync(self.device)
            self._images, self._started = 0, time.perf_counter()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._images += len(batch[1])
        if batch_idx == trainer.num_training_batches - 1:
            step_overhead.sync(self.device)
            self.epochs.append((self._images, time.perf_counter() - self._started))


def rate(epochs: list[tuple[int, float]]) -> float:
    """Images/s over the epochs after the first (which compiles and warms up)."""
    images, seconds = (sum(column) for column in zip(*epochs[1:], strict=True))
    return images / seconds


@dataclass
class Fit:
    """One experiment=fast_cifar10 fit + test, and the plain loop's rate on the same model, data and device."""

    metrics: dict[str, Any]
    recompiles: list[str]
    watch: Watch
    plain: float
    log: str  # what the run printed


def plain_rate(overrides: list[str], epochs: int, device: torch.device) -> float:
    """Images/s of benchmarks/overhead.py's plain loop over the epochs after the first, with the model the run
    builds (its SpeedPlan: precision, channels_last, compile) on the run's data, the way the run serves them
    (device-resident or its DataLoader)."""
    conf = validate(compose_cfg(overrides))
    dm = load_data_early(build_datamodule(conf.dataset))
    plan = plan_speed(conf, dm)
    split = dm.train_split
    loader = (DeviceBatches(split.images.to(device), split.labels.to(device), conf.dataset.batch_size, shuffle=True,
                            seed=conf.seed) if plan.device_resident else dm.train_dataloader())
    steps = len(loader)
    loop = PlainLoop(conf, plan, dm, steps * epochs, conf.seed, device, loader)
    measured = []
    for _ in range(epochs):
        loop.start_epoch()
        images = loop.images
        step_overhead.sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            loop.step()
        step_overhead.sync(device)
        measured.append((loop.images - images, time.perf_counter() - started))
    loop.finish()
    return rate(measured)


def fit_fast_cifar10(device: torch.device, sizes: Sizes, work: Path) -> Fit:
    """experiment=fast_cifar10 on CIFAR-10 files in torchvision's format (their MD5s trusted in this process
    only), with `run.train` as `python train.py` runs it; then the plain loop on the same files."""
    root = work / "data"
    write_cifar10(root, per_batch=sizes.cifar_per_batch, n_test=sizes.cifar_test, seed=0)
    overrides = ["experiment=fast_cifar10", f"dataset.root={root}", "logger=none", "trainer.enable_progress_bar=false",
                 f"compile_cache_dir={work / 'compile_cache'}", *sizes.fit]
    epochs = validate(compose_cfg(overrides)).trainer.max_epochs
    watch, log = Watch(device), io.StringIO()
    torch.compiler.reset()  # this process's earlier compiles of NiN would count as recompiles of this fit
    import pytest  # its MonkeyPatch: torchvision's MD5 tables, undone at the end

    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(log):
        trust_fake_md5(patch, root)
        with compat.recompile_log() as recompiles:
            train(compose_cfg(overrides), JobContext(run_dir=work / "fast_cifar10"), callbacks=[watch])
        plain = plain_rate(overrides, epochs, device)
    metrics = json.loads((work / "fast_cifar10" / "metrics.json").read_text())
    return Fit(metrics, list(recompiles), watch, plain, log.getvalue())


@dataclass
class Context:
    """What the checks share: the device, the sizes, a work dir, and the fast_cifar10 fit (made once)."""

    device: torch.device
    sizes: Sizes
    work: Path
    _fit: Fit | Exception | None = field(default=None, repr=False)

    @property
    def dry(self) -> bool:
        return self.device.type != "cuda"

    def fit(self) -> Fit:
        if self._fit is None:
            try:
                self._fit = fit_fast_cifar10(self.device, self.sizes, self.work)
            except Exception as exc:
                traceback.print_exc()
                self._fit = exc
        if isinstance(self._fit, Exception):
            raise RuntimeError(f"the fast_cifar10 run failed: {one_line(self._fit)}") from self._fit
        return self._fit


Result = tuple[bool | None, str]  # (passed; None: not applicable here), the figure


def check_host_sync(ctx: Context) -> Result:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           str(REPO / "tests" / "test_gpu_fast_path.py"), "-k", ctx.sizes.host_sync]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    summary = next((ln.strip("= ") for ln in reversed(result.stdout.splitlines()) if ln.strip()), "no output")
    passed = re.search(r"(\d+) passed", summary)
    ok = result.returncode == 0 and passed is not None and int(passed.group(1)) == ctx.sizes.host_sync_cases
    if not ok:
        print(result.stdout[-3000:], result.stderr[-2000:], sep="\n", file=sys.stderr)
    return ok, f"pytest -k '{ctx.sizes.host_sync}': {summary}"


def check_compile(ctx: Context) -> Result:
    if not ctx.dry and torch.cuda.get_device_capability() < (7, 0):
        return None, "model.compile=auto is off before sm 70"
    fit = ctx.fit()
    m = fit.metrics
    if not m.get("speed/compile"):
        said = [ln for ln in fit.log.splitlines() if "model.compile" in ln]
        return False, f"compiled nothing: {said[0] if said else 'speed/compile is false'}"
    graphs, breaks, recompiles = m.get("speed/compiled_graphs"), m.get("speed/graph_breaks"), len(fit.recompiles)
    ok = (graphs, breaks, recompiles) == (2, 0, 1)
    return ok, (f"{m['speed/compile_backend']}, fit + test: graphs {graphs}, graph breaks {breaks}, recompiles "
                f"{recompiles} (expected 2, 0, 1)")


def check_data_pipeline(ctx: Context) -> Result:
    images, labels = data_pipeline.synthetic(ctx.sizes.pipeline_images)
    loader, resident = data_pipeline.project_rates(images, labels, ctx.sizes.pipeline_epochs, ctx.device)
    ratio = resident / loader
    return (ctx.dry or ratio >= 1.0), (f"device-resident {resident:,.0f} images/s, DataLoader path {loader:,.0f}: "
                                       f"resident ratio {ratio:.2f}")


def check_step_overhead(ctx: Context) -> Result:
    s = ctx.sizes
    rows = step_overhead.measure(list(s.overhead_batches), s.overhead_steps, s.overhead_skip, s.overhead_repeats,
                                 ctx.device)
    ok = all(math.isfinite(v) and v > 0 for _, t in rows for v in t.values())
    return ok, "; ".join(f"batch {b}: {1e3 * t['plain']:.2f} ms/step plain, {1e3 * t['ours']:.2f} ours, "
                         f"overhead alone allows {step_overhead.ceiling(b, t)}" for b, t in rows)


def expected_switches(device: torch.device) -> tuple[str, bool, str]:
    """(precision, channels_last, where) that docs/speed.md's table says `auto` gives on DEVICE. On the CPU (a
    dry run) the expectation is the product's own rule: only the plumbing is checked there."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability()
        name = f"{torch.cuda.get_device_name()} (sm {major}{minor})"
        return ("bf16-mixed" if major >= 8 else "16-mixed"), major >= 7, name
    return speed.resolve_precision("auto", "cpu")[0], speed.CPU_CHANNELS_LAST, "cpu"


def check_precision_and_channels_last(ctx: Context) -> Result:
    precision, channels_last, where = expected_switches(ctx.device)
    fit = ctx.fit()
    seen = (fit.watch.precision, fit.watch.channels_last, fit.metrics.get("speed/precision"))
    ok = seen == (precision, channels_last, precision)
    on = {True: "on", False: "off", None: "?"}
    return ok, (f"{where}: trained in {seen[0]} with channels_last {on[seen[1]]} (expected {precision}, "
                f"{on[channels_last]})")


def check_fast_cifar10(ctx: Context) -> Result:
    fit = ctx.fit()
    m, ours = fit.metrics, rate(fit.watch.epochs)
    acc = float(m.get("test/acc", 0.0))
    ok = m.get("status") == "completed" and acc > LEARNED
    return ok, (f"{ours:,.0f} images/s, a plain PyTorch loop {fit.plain:,.0f}: ratio {ours / fit.plain:.2f}; "
                f"test acc {acc:.3f}")


CHECKS: list[tuple[str, Callable[[Context], Result]]] = [
    ("host sync", check_host_sync),
    ("compile", check_compile),
    ("data pipeline", check_data_pipeline),
    ("step overhead", check_step_overhead),
    ("precision, NHWC", check_precision_and_channels_last),
    ("fast_cifar10", check_fast_cifar10),
]


def run_checks(ctx: Context, checks: list[tuple[str, Callable[[Context], Result]]]) -> list[tuple[str, str, str]]:
    """(check, result, figure) for each check; a check that raises fails with its error's one line."""
    rows = []
    for name, check in checks:
        print(f"gpu-check: {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            ok, figure = check(ctx)
        except Exception as exc:
            if not isinstance(exc.__cause__, Exception):  # the fit's traceback is printed once, when it failed
                traceback.print_exc()
            ok, figure = False, one_line(exc)
        result = {True: "ok", False: "FAIL", None: "n/a"}[ok]
        rows.append((name, result, f"{figure} [{time.perf_counter() - started:.0f} s]"))
    return rows


def table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(row[i]) for row in [("check", "result", "figure"), *rows]) for i in range(2)]
    lines = [f"{'check':<{widths[0]}}  {'result':<{widths[1]}}  figure"]
    lines += [f"{name:<{widths[0]}}  {result:<{widths[1]}}  {figure}" for name, result, figure in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: a dry run, every check tiny on the CPU (its figures mean nothing)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the files, the run dir and the compile cache go (default: a temporary dir, removed)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    device = torch.device(args.device)
    sizes = GPU if device.type == "cuda" else DRY
    with contextlib.ExitStack() as stack:
        work = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nin-gpu-check-")))
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        rows = run_checks(Context(device, sizes, work), CHECKS)
    where = (f"on {torch.cuda.get_device_name()}" if device.type == "cuda"
             else "DRY RUN on the CPU: tiny sizes, the figures mean nothing and speed is not judged")
    print(f"gpu-check {where}, {time.perf_counter() - started:.0f} s")
    print(table(rows))
    failed = [name for name, result, _ in rows if result == "FAIL"]
    if failed:
        print(f"gpu-check: {len(failed)} check(s) failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
