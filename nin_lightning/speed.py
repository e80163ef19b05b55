"""Speed switches: every `auto` becomes the fastest choice that is still correct on the device in use.

`resolve(conf)` reads the typed config, decides, and returns a frozen `SpeedPlan`, which run.py hands to
the model, the optimizer and the Trainer; the config itself keeps what the user asked for (`auto`).
Explicit choices are kept when the device can honour them; otherwise they fall back, and the plan
carries a one-line notice that says so.

| switch                     | auto on CUDA                          | auto on CPU (MPS)                        |
|----------------------------|---------------------------------------|------------------------------------------|
| trainer.precision          | bf16-mixed (16-mixed before Ampere)   | bf16-mixed with native bf16, else 32-true |
| model.channels_last        | on (tensor-core GPUs, sm >= 70)       | on (off)                                 |
| model.compile              | on (sm >= 70, with Triton)            | off: measured x0.8 slower, +35 s compile |
| trainer.benchmark (cuDNN)  | on unless trainer.deterministic       | off: CUDA only                           |
| optimizer.implementation   | fused                                 | fused where torch has kernels, else foreach |
| dataset.tta (flip at eval) | = dataset.flip; never for digit datasets (a mirrored digit is another digit) |
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from nin_lightning import compat
from nin_lightning.config import DIGIT_DATASETS, TrainConfig
from nin_lightning.status import say

# Measured on the project's 2-core AMD EPYC (AVX512-BF16), interleaved in one process, NiN train steps/s
# against fp32 NCHW: channels_last x1.2 (MNIST and CIFAR shapes), bf16 autocast x1.7-1.9, both x2.2-2.5.
CPU_CHANNELS_LAST = True


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
    notices: tuple[str, ...] = ()

    def record(self) -> dict[str, str | bool]:
        """The concrete choices, for the W&B config and metrics.json (`auto` in the config says too little)."""
        return {"device": self.device, "precision": self.precision, "channels_last": self.channels_last,
                "compile": self.compile, "cudnn_benchmark": self.benchmark, "optimizer": self.optimizer_impl,
                "tta": self.tta}

    def summary(self) -> str:
        on = {True: "on", False: "off"}
        return (f"speed ({self.device}): precision={self.precision} channels_last={on[self.channels_last]} "
                f"compile={on[self.compile]} cudnn.benchmark={on[self.benchmark]} "
                f"optimizer={self.optimizer_impl} tta={on[self.tta]}")


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
    try:
        return bool(torch.cuda.is_bf16_supported())
    except Exception:
        return False


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


def resolve_compile(requested: bool | str, device: str) -> tuple[bool, str | None]:
    if requested == "auto":
        return device == "cuda" and _cuda_capability() >= (7, 0) and _triton_available() and _dynamo_supported(), None
    if not requested:
        return False, None
    if not _dynamo_supported():
        version = sys.version.split()[0]
        return False, f"model.compile=true: torch.compile does not support Python {version} here; running eager"
    if device == "cuda" and not _triton_available():
        return False, "model.compile=true: Triton is not installed; running eager"
    if device == "cpu" and not _cpu_compiler_available():
        return False, "model.compile=true: no C++ compiler on PATH for torch.compile on CPU; running eager"
    return True, None


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


def resolve_optimizer_impl(requested: str, device: str) -> tuple[str, str | None]:
    """fused (one kernel for all parameters), foreach (one kernel per op) or for_loop (one per tensor)."""
    if requested == "auto":
        return ("fused" if _fused_supported(device) else "foreach"), None
    if requested == "fused" and not _fused_supported(device):
        return "foreach", f"optimizer.implementation=fused: no fused optimizer kernels on {device}; using foreach"
    return requested, None


def resolve_tta(requested: bool | str, dataset: str, flip: bool) -> bool:
    """Flip TTA at evaluation. `auto` follows dataset.flip; the config schema rejects true for digit datasets."""
    if requested == "auto":
        return flip and dataset not in DIGIT_DATASETS
    return bool(requested)


def resolve(conf: TrainConfig) -> SpeedPlan:
    """Decide every switch for this config on this machine (no side effects)."""
    device = target_device(conf.trainer.accelerator)
    precision, n1 = resolve_precision(conf.trainer.precision, device)
    channels_last, n2 = resolve_channels_last(conf.model.channels_last, device)
    compiled, n3 = resolve_compile(conf.model.compile, device)
    benchmark, n4 = resolve_benchmark(conf.trainer.benchmark, device, conf.trainer.deterministic)
    impl, n5 = resolve_optimizer_impl(conf.optimizer.implementation, device)
    tta = resolve_tta(conf.dataset.tta, conf.dataset.name, conf.dataset.flip)
    notices = tuple(n for n in (n1, n2, n3, n4, n5) if n)
    return SpeedPlan(device, precision, channels_last, compiled, benchmark, impl, tta, notices)


def prepare_model(net: torch.nn.Module, channels_last: bool, compile: bool) -> torch.nn.Module:
    """channels_last weights and `nn.Module.compile()` (in place: state_dict keys stay unchanged)."""
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compile:
        net.compile()  # a graph that fails to compile raises: what runs is what metrics.json says
    return net


def announce(plan: SpeedPlan) -> None:
    """Each notice and the summary, one line each."""
    for notice in plan.notices:
        say(notice)
    say(plan.summary())
