"""Speed switches: `resolve(conf)` turns every `auto` into the fastest choice still correct on the device in use
(a `SpeedPlan`; the config keeps what the user asked for). What each becomes, and why: docs/speed.md."""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F

from nin_lightning import compat
from nin_lightning.config import DIGIT_DATASETS, TrainConfig
from nin_lightning.errors import UserError, one_line
from nin_lightning.status import say

_T = TypeVar("_T")
CPU_CHANNELS_LAST = True  # x1.2 faster NiN steps on the project's CPU (docs/speed.md)
# `dataset.device_resident=auto` keeps the uint8 splits on a GPU when they take at most this share of its memory
RESIDENT_GPU_FRACTION = 0.25
_CACHE_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def _torch_default_cache_dir() -> str:
    """Inductor's cache unless told, as torch/_inductor/runtime/cache_dir_utils.py `default_cache_dir` computes it:
    torch writes it into TORCHINDUCTOR_CACHE_DIR when it first looks (importing Lightning does)."""
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
    if accelerator in ("cpu", "mps", "cuda"):
        return accelerator
    cuda, mps = torch.cuda.is_available(), _mps_available()
    if accelerator == "gpu":
        return "mps" if mps and not cuda else "cuda"
    return "cuda" if cuda else "mps" if mps else "cpu"  # auto


def _ask(query: Callable[[], _T], default: _T) -> _T:
    """QUERY's answer, or DEFAULT when torch cannot answer here (no driver, no device, no such API)."""
    try:
        return query()
    except Exception:
        return default


def _mps_available() -> bool:
    return torch.backends.mps.is_available()


def _bf16_supported() -> bool:
    """Native bf16 (sm >= 80): `is_bf16_supported()` alone also counts sm75's emulation, far slower than fp16."""
    return _ask(lambda: torch.cuda.is_bf16_supported(including_emulation=False), False)


def _cpu_bf16_native() -> bool:
    """bf16 matmul/conv instructions (AVX512-BF16 or AMX) in the kernel's CPU flags (torch has no public query)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return bool({"avx512_bf16", "amx_bf16"} & set(line.split()))
    return False


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def _cpu_compiler_available() -> bool:
    """Inductor on CPU compiles C++ at run time: it needs a compiler on PATH."""
    return any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


def _fused_supported(device: str) -> bool:
    return _ask(lambda: device in compat.fused_optimizer_devices(), device == "cuda")


def resolve_precision(requested: str, device: str) -> tuple[str, str | None]:
    """(precision, notice or None)."""
    if requested == "auto":
        if device == "cuda":
            return ("bf16-mixed" if _bf16_supported() else "16-mixed"), None
        return ("bf16-mixed" if device == "cpu" and _cpu_bf16_native() else "32-true"), None
    if device == "cuda" and requested.startswith("bf16") and not _bf16_supported():
        return "16-mixed", f"trainer.precision={requested}: this GPU has no bf16; using 16-mixed"
    if device == "cpu" and requested in ("16-mixed", "16"):
        return "bf16-mixed", f"trainer.precision={requested}: fp16 autocast is not supported on CPU; using bf16-mixed"
    return requested, None


def resolve_channels_last(requested: bool | str, device: str) -> tuple[bool, str | None]:
    """(channels_last, None): it is supported everywhere, so an explicit choice is kept."""
    if requested != "auto":
        return bool(requested), None
    if device == "cuda":
        return _ask(torch.cuda.get_device_capability, (0, 0)) >= (7, 0), None
    return device == "cpu" and CPU_CHANNELS_LAST, None


def resolve_compile(requested: bool | str, device: str, backend: str = "inductor") -> tuple[bool, str | None]:
    """(compile, notice or None). Inductor generates code (Triton on CUDA, C++ on CPU): it needs their tools."""
    inductor = backend == "inductor"
    if requested == "auto":
        return (device == "cuda" and _ask(torch.cuda.get_device_capability, (0, 0)) >= (7, 0)
                and (_triton_available() or not inductor) and _ask(compat.dynamo_supported, False)), None
    if not requested:
        return False, None
    if not _ask(compat.dynamo_supported, False):
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


def resolve_benchmark(requested: bool | str | None, device: str, deterministic: bool) -> tuple[bool, str | None]:
    """(cudnn.benchmark, notice or None)."""
    if requested in ("auto", None):
        return device == "cuda" and not deterministic, None
    if requested and device != "cuda":
        return False, "trainer.benchmark=true: cuDNN autotuning exists only on CUDA; ignored here"
    if requested and deterministic:
        return False, "trainer.benchmark=true conflicts with trainer.deterministic=true; benchmark off"
    return bool(requested), None


def resolve_optimizer_impl(requested: str, device: str, clips_mixed: bool = False) -> tuple[str, str | None]:
    """fused, foreach or for_loop. `clips_mixed`: gradient clipping under mixed precision, which Lightning
    refuses for a fused optimizer (it unscales gradients inside its step, after the clipping)."""
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
    splits' size (NiNDataModule.nbytes), for `dataset.device_resident=auto` (on a GPU they fit)."""
    device = target_device(conf.trainer.accelerator)
    precision, n1 = resolve_precision(conf.trainer.precision, device)
    channels_last, n2 = resolve_channels_last(conf.model.channels_last, device)
    compiled, n3 = resolve_compile(conf.model.compile, device, conf.model.compile_backend)
    benchmark, n4 = resolve_benchmark(conf.trainer.benchmark, device, conf.trainer.deterministic)
    clips_mixed = bool(conf.trainer.gradient_clip_val) and "mixed" in str(precision)
    impl, n5 = resolve_optimizer_impl(conf.optimizer.implementation, device, clips_mixed)
    tta = resolve_tta(conf.dataset.tta, conf.dataset.name, conf.dataset.flip)
    resident = conf.dataset.device_resident
    if resident == "auto":
        gpu_memory = _ask(lambda: torch.cuda.get_device_properties(0).total_memory, 0)
        resident = device == "cuda" and data_bytes is not None and data_bytes <= RESIDENT_GPU_FRACTION * gpu_memory
    notices = tuple(n for n in (n1, n2, n3, n4, n5) if n)
    return SpeedPlan(device, precision, channels_last, compiled, benchmark, impl, tta, bool(resident),
                     conf.model.compile_backend, notices)


def use_compile_cache(path: str | Path) -> Path:
    """Inductor's and Triton's caches in PATH (kept across runs), unless the user's environment named them."""
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
    """Compile and run `_probe_step` (forward and backward) on the plan's device with its backend; a compile
    that fails there falls back to eager with a one-line notice, known at start rather than hidden."""
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
    """channels_last weights and `nn.Module.compile()` with static shapes (in place: state_dict keys stay)."""
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
