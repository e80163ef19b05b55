"""What metrics.json and the W&B run's summary say about a run: its result, its code's version, its model's cost."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nin_lightning import metric_names as names

# The W&B summary's keys (a runs table's columns), all from the run's metrics.json.
SUMMARY_KEYS = ("status", "wall_time_s", "epochs", names.BEST_EPOCH, "params", "macs", names.acc(names.TEST),
                names.VAL_ACC_BEST, "code/commit", "code/dirty", "error", "data/train_size", "data/val_size",
                "data/test_size")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) holding nin_lightning/
GIT_TIMEOUT_S = 10.0  # a git on a slow network filesystem; no answer then means "not known"


def code_and_size_keys(code: dict[str, Any], cost: dict[str, int]) -> dict[str, Any]:
    """metrics.json's keys from the start on: code/version, code/commit, code/dirty, params, macs."""
    return {**{f"code/{k}": v for k, v in code.items()}, **cost}


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):  # no git installed, or it hangs
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(root: Path) -> dict[str, Any]:
    """{"commit": sha, "dirty": bool (tracked files)} at the top of a git checkout (not a venv in one), else {}."""
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve():
        return {}
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    if commit is None or status is None:
        return {}
    return {"commit": commit, "dirty": bool(status)}


@functools.cache
def code_version(root: Path = PACKAGE_ROOT) -> dict[str, Any]:
    """{"version": "0.1.0", "commit": sha, "dirty": False} (commit and dirty from a git checkout), read once."""
    try:
        version = metadata.version("nin-lightning")
    except metadata.PackageNotFoundError:  # run from a checkout that was never pip-installed
        version = None
    return {"version": version, **git_state(root)}


def _forward_one_image(net: nn.Module, image_shape: tuple[int, int, int], training: bool) -> None:
    """NET on one empty image of IMAGE_SHAPE (C, H, W) in training or eval mode; its own mode is restored."""
    was_training = net.training
    net.train(training)
    try:
        with torch.no_grad():
            net(torch.empty(1, *image_shape, device=next(net.parameters()).device))
    finally:
        net.train(was_training)


def model_cost(net: nn.Module, image_shape: tuple[int, int, int]) -> dict[str, int]:
    """{"params": all parameters, "macs": multiply-accumulates of one eval-mode forward pass of one image}: torch's
    FLOP count / 2 (convolutions and linear layers). Build NET on the meta device to count without allocating."""
    with FlopCounterMode(display=False) as counter:
        _forward_one_image(net, image_shape, training=False)
    return {"params": sum(p.numel() for p in net.parameters()), "macs": counter.get_total_flops() // 2}


def activations_per_image(net: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """Values the layers of NET output for one image in training mode (in-place ones reuse their input's
    memory and are not counted): about what a training step keeps for the backward pass, per image."""
    leaves = [m for m in net.modules() if not list(m.children()) and not getattr(m, "inplace", False)]
    count = 0

    def add(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal count
        count += output.numel() if isinstance(output, torch.Tensor) else 0

    hooks = [m.register_forward_hook(add) for m in leaves]
    try:
        _forward_one_image(net, image_shape, training=True)
    finally:
        for hook in hooks:
            hook.remove()
    return count
