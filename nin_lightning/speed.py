"""Speed switches: every `auto` becomes the fastest choice that is still correct on the device in use.

`resolve(conf)` reads the typed config, decides, and returns a frozen `SpeedPlan`, which run.py hands to
the model, the optimizer and the Trainer; the config itself keeps what the user asked for (`auto`).
Explicit choices are kept when the device can honour them; otherwise they fall back, and the plan
carries a one-line notice that says so.

| switch                     | auto on CUDA                          | auto on CPU (MPS)                        |
|----------------------------|---------------------------------------|------------------------------------------|
| trainer.precision          | bf16-mixed (16-mixed before sm 80)    | bf16-mixed with native bf16, else 32-true |
| model.channels_last        | on (tensor-core GPUs, sm >= 70)       | on (off)                                 |
| model.compile              | on (sm >= 70, with Triton)            | off: measured x0.8 slower, +35 s compile |
| dataset.device_resident    | on when the splits fit in memory      | off: the DataLoader path                 |
| trainer.benchmark (cuDNN)  | on unless trainer.deterministic       | off: CUDA only                           |
| optimizer.implementation   | fused                                 | fused where torch has kernels, else foreach |
| dataset.tta (flip at eval) | = dataset.flip; never for digit datasets (a mirrored digit is another digit) |

A compile is checked, never hidden: `check_compile` compiles a small step on the device at start, and a
compile that cannot work there (no Triton, no C compiler for its launcher, ...) falls back to eager with
one line, so `speed/compile` in metrics.json says what really ran. The model compiles with static shapes
(the data give one batch shape per mode: whole training batches, padded evaluation batches) and kernels
are cached in `compile_cache_dir` across runs.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from nin_lightning import compat
from nin_lightning.config import DIGIT_DATASETS, TrainConfig
from nin_lightning.errors import UserError, one_line
from nin_lightning.status import say

# Measured on the project's 2-core AMD EPYC (AVX512-BF16), interleaved in one process, NiN train steps/s
# against fp32 NCHW: channels_last x1.2 (MNIST and CIFAR shapes), bf16 autocast x1.7-1.9, both x2.2-2.5.
CPU_CHANNELS_LAST = True
# `dataset.device_resident=auto` keeps the uint8 splits on a GPU when they take at most this share of its
# memory; the rest is for the model, activations at batch 1024 and the allocator's slack. (CIFAR-10 is
# 0.18 GB, SVHN train+extra 1.9 GB: both fit a 16 GB GPU.)
RESIDENT_GPU_FRACTION = 0.25
_CACHE_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def _torch_default_cache_dir() -> str:
    """Where inductor caches unless told: torch writes this into TORCHINDUCTOR_CACHE_DIR when it first looks
    (importing Lightning does), so that value must not pass for a user's choice. As
    torch/_inductor/runtime/cache_dir_utils.py `default_cache_dir` computes it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid_{os.getuid()}"
    return os.path.join(tempfile.gettempdir(), "torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user))


# Compile caches the user named, read at import (before a compile of ours sets them); torch's default is none.
_USER_CACHE_DIRS = {var: os.environ[var] for var in _CACHE_VARS
                    if os.environ.get(var) and os.environ[var] != _torch_default_cache_dir()}


@dataclass(frozen=True)
class SpeedPlan:
    """Concrete choices for one run, and the one-line notices for any request the device cannot honour."""

    device: str
    precision: str
    channels_last: bool
    compile: bool
    benchmark: bool
    optimizer_impl: str
    tta: bool
    device_resident: bool = False
    compile_backend: str = "inductor"
    notices: tuple[str, ...] = ()

    def record(self) -> dict[str, str | bool]:
        """The concrete choices, for the W&B config and metrics.json (`auto` in the config says too little)."""
        return {"device": self.device, "precision": self.precision, "channels_last": self.channels_last,
                "compile": self.compile, "compile_backend": self.compile_backend if self.compile else "none",
                "cudnn_benchmark": self.benchmark, "optimizer": self.optimizer_impl, "tta": self.tta,
                "device_resident": self.device_resident}

    def summary(self) -> str:
        on = {True: "on", False: "off"}
        compiled = f"on ({self.compile_backend})" if self.compile else "off"
        return (f"speed ({self.device}): precision={self.precision} channels_last={on[self.channels_last]} "
                f"compile={compiled} cudnn.benchmark={on[self.benchmark]} "
                f"optimizer={self.optimizer_impl} tta={on[self.tta]} device_resident={on[self.device_resident]}")


def target_device(accelerator: str) -> str:
    """cuda, mps or cpu: where Lightning will put the model for `trainer.accelerator`."""
    cuda, mps = torch.cuda.is_available(), _mps_available()
    if accelerator == "cpu":
        return "cpu"
    if accelerator == "mps":
        return "mps"
    if accelerator == "cuda":
        return "cuda"
    if accelerator == "gpu":
        return "mps" if mps and not cuda else "cuda"
    return "cuda" if cuda else "mps" if mps else "cpu"  # auto


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def _cuda_capability() -> tuple[int, int]:
    try:
        return torch.cuda.get_device_capability()
    except Exception:  # no driver or no device: the Trainer will say so
        return (0, 0)


def _bf16_supported() -> bool:
    """Native bf16 (sm >= 80). `is_bf16_supported()` alone also counts emulation, which sm75 offers: bf16
    autocast there runs without tensor cores, far slower than fp16."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except Exception:
        return False


def _gpu_memory() -> int:
    """Bytes of memory of GPU 0 (0 without one); no CUDA context is created for it."""
    try:
        return int(torch.cuda.get_device_properties(0).total_memory)
    except Exception:
        return 0


def _cpu_bf16_native(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """bf16 matmul/conv instructions (AVX512-BF16 or AMX), from the kernel's CPU flags: bf16 autocast is then
    faster, not emulated. (torch has no public query; elsewhere than Linux: no.)"""
    try:
        flags = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def _cpu_compiler_available() -> bool:
    """Inductor on CPU compiles C++ at run time: it needs a compiler on PATH."""
    return any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


def _dynamo_supported() -> bool:
    try:
        return compat.dynamo_supported()
    except Exception:
        return False


def resolve_precision(requested: str, device: str) -> tuple[str, str | None]:
    """(precision, notice or None)."""
    if requested == "auto":
        if device == "cuda":
            return ("bf16-mixed" if _bf16_supported() else "16-mixed"), None
        if device == "cpu" and _cpu_bf16_native():
            return "bf16-mixed", None
        return "32-true", None
    if device == "cuda" and requested.startswith("bf16") and not _bf16_supported():
        return "16-mixed", f"trainer.precision={requested}: this GPU has no bf16; using 16-mixed"
    if device == "cpu" and requested in ("16-mixed", "16"):
        return "bf16-mixed", f"trainer.precision={requested}: fp16 autocast is not supported on CPU; using bf16-mixed"
    return requested, None


def resolve_channels_last(requested: bool | str, device: str) -> tuple[bool, str | None]:
    if requested == "auto":
        if device == "cuda":
            return _cuda_capability() >= (7, 0), None
        return device == "cpu" and CPU_CHANNELS_LAST, None
    return bool(requested), None  # channels_last is supported everywhere


def resolve_compile(requested: bool | str, device: str, backend: str = "inductor") -> tuple[bool, str | None]:
    inductor = backend == "inductor"  # the one backend that generates code: Triton on CUDA, C++ on CPU
    if requested == "auto":
        return (device == "cuda" and _cuda_capability() >= (7, 0) and (_triton_available() or not inductor)
                and _dynamo_supported()), None
    if not requested:
        return False, None
    if not _dynamo_supported():
        version = sys.version.split()[0]
        return False, f"model.compile=true: torch.compile does not support Python {version} here; running eager"
    if inductor and device == "cuda" and not _triton_available():
        return False, "model.compile=true: Triton is not installed; running eager"
    if inductor and device == "cpu" and not _cpu_compiler_available():
        return False, "model.compile=true: no C++ compiler on PATH for torch.compile on CPU; running eager"
    return True, None


def check_backend(conf: TrainConfig) -> None:
    """`model.compile_backend` names a torch.compile backend (one line, before any work, when it does not)."""
    backend = conf.model.compile_backend
    if conf.model.compile is False or backend == "inductor":  # torch's own default (listing the rest costs ~4 s)
        return
    known = sorted(torch.compiler.list_backends(exclude_tags=()))
    if backend not in known:
        raise UserError(f"model.compile_backend={backend!r} is not a torch.compile backend; choose one of: "
                        f"{', '.join(known)}")


def resolve_device_resident(requested: bool | str, device: str, data_bytes: int | None) -> bool:
    """The splits on the device: `auto` = on a GPU whose memory they fit (RESIDENT_GPU_FRACTION), not on a CPU
    (there, the DataLoader path is as fast: benchmarks/data_pipeline.py)."""
    if requested == "auto":
        return device == "cuda" and data_bytes is not None and data_bytes <= RESIDENT_GPU_FRACTION * _gpu_memory()
    return bool(requested)


def resolve_benchmark(requested: bool | str | None, device: str, deterministic: bool) -> tuple[bool, str | None]:
    if requested in ("auto", None):
        return device == "cuda" and not deterministic, None
    if requested and device != "cuda":
        return False, "trainer.benchmark=true: cuDNN autotuning exists only on CUDA; ignored here"
    if requested and deterministic:
        return False, "trainer.benchmark=true conflicts with trainer.deterministic=true; benchmark off"
    return bool(requested), None


def _fused_supported(device: str) -> bool:
    try:
        return device in compat.fused_optimizer_devices()
    except Exception:
        return device == "cuda"


def resolve_optimizer_impl(requested: str, device: str, clips_mixed: bool = False) -> tuple[str, str | None]:
    """fused (one kernel for all parameters), foreach (one kernel per op) or for_loop (one per tensor).

    `clips_mixed`: gradient clipping with mixed precision, which Lightning refuses for a fused optimizer
    (it unscales gradients inside its step, after the clipping would have to happen)."""
    if requested == "auto":
        return ("fused" if _fused_supported(device) and not clips_mixed else "foreach"), None
    if requested == "fused" and not _fused_supported(device):
        return "foreach", f"optimizer.implementation=fused: no fused optimizer kernels on {device}; using foreach"
    if requested == "fused" and clips_mixed:
        return "foreach", ("optimizer.implementation=fused: Lightning cannot clip the gradients of a fused optimizer "
                           "under mixed precision (trainer.gradient_clip_val); using foreach")
    return requested, None


def resolve_tta(requested: bool | str, dataset: str, flip: bool) -> bool:
    """Flip TTA at evaluation. `auto` follows dataset.flip; the config schema rejects true for digit datasets."""
    if requested == "auto":
        return flip and dataset not in DIGIT_DATASETS
    return bool(requested)


def resolve(conf: TrainConfig, data_bytes: int | None = None) -> SpeedPlan:
    """Decide every switch for this config on this machine (no side effects). `data_bytes`: the loaded
    splits' size (NiNDataModule.nbytes), for `dataset.device_resident=auto`."""
    device = target_device(conf.trainer.accelerator)
    precision, n1 = resolve_precision(conf.trainer.precision, device)
    channels_last, n2 = resolve_channels_last(conf.model.channels_last, device)
    compiled, n3 = resolve_compile(conf.model.compile, device, conf.model.compile_backend)
    benchmark, n4 = resolve_benchmark(conf.trainer.benchmark, device, conf.trainer.deterministic)
    clips_mixed = bool(conf.trainer.gradient_clip_val) and "mixed" in str(precision)
    impl, n5 = resolve_optimizer_impl(conf.optimizer.implementation, device, clips_mixed)
    tta = resolve_tta(conf.dataset.tta, conf.dataset.name, conf.dataset.flip)
    resident = resolve_device_resident(conf.dataset.device_resident, device, data_bytes)
    notices = tuple(n for n in (n1, n2, n3, n4, n5) if n)
    return SpeedPlan(device, precision, channels_last, compiled, benchmark, impl, tta, resident,
                     conf.model.compile_backend, notices)


def use_compile_cache(path: str | Path) -> Path:
    """Inductor's and Triton's caches in PATH (under the output root: kept across runs, so a run after the
    first skips most compiling), unless the user's environment named them."""
    path = Path(path).expanduser().resolve()
    for var, where in zip(_CACHE_VARS, (path, path / "triton"), strict=True):
        os.environ[var] = _USER_CACHE_DIRS.get(var, str(where))
    used = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    used.mkdir(parents=True, exist_ok=True)
    return used


def _probe_step(x: torch.Tensor, w: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """A miniature of NiN's layers (conv, batch norm, ReLU, pooling): what `check_compile` compiles."""
    y = F.batch_norm(F.conv2d(x, w, padding=1), mean, var, training=True)
    return F.adaptive_avg_pool2d(F.relu(y), 1).sum()


def check_compile(plan: SpeedPlan) -> SpeedPlan:
    """Compile and run `_probe_step` (forward and backward) on the plan's device with its backend. If that
    fails, the plan falls back to eager with a one-line notice: a compile that cannot work here (Triton
    without a C compiler or Python headers for its launcher, a broken C++ toolchain) is known at start,
    not hidden (nothing sets torch._dynamo's suppress_errors)."""
    if not plan.compile:
        return plan
    device = plan.device
    try:
        step = torch.compile(_probe_step, backend=plan.compile_backend, dynamic=False)
        w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
        step(torch.randn(2, 3, 8, 8, device=device), w, torch.zeros(4, device=device),
             torch.ones(4, device=device)).backward()
    except Exception as exc:  # any failure to compile or to run what was compiled
        notice = (f"model.compile: torch.compile ({plan.compile_backend}) fails on this {plan.device} "
                  f"({one_line(exc)[:200]}); running eager")
        return replace(plan, compile=False, notices=(*plan.notices, notice))
    return plan


def prepare_model(net: torch.nn.Module, channels_last: bool, compile: bool, backend: str = "inductor"
                  ) -> torch.nn.Module:
    """channels_last weights and `nn.Module.compile()` (in place: state_dict keys stay unchanged).

    Static shapes (`dynamic=False`): training batches are whole (drop_last) and evaluation batches padded
    to one size, so each mode compiles once; a shape that changed anyway would compile again, visibly
    (TORCH_LOGS=recompiles, and `speed/compiled_graphs` in metrics.json)."""
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compile:
        net.compile(backend=backend, dynamic=False)  # a graph that fails to compile raises: no hidden fallback
    return net


def announce(plan: SpeedPlan) -> None:
    """Each notice and the summary, one line each."""
    for notice in plan.notices:
        say(notice)
    say(plan.summary())
