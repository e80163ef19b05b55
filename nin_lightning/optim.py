"""Optimizer and LR scheduler factories from the typed configs."""

from __future__ import annotations

import copy
import functools
import math
import warnings
from typing import Any

import torch
from torch import nn

from nin_lightning import compat
from nin_lightning.config import schema

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)
# torch.optim keyword arguments of each implementation (`auto`: torch's own default)
_IMPLEMENTATIONS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}


def param_groups(model: nn.Module, weight_decay: float, exempt_bias_norm: bool) -> list[dict[str, Any]]:
    """One group with weight decay; with `exempt_bias_norm`, biases and norm parameters get none."""
    if not exempt_bias_norm or weight_decay == 0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            exempt = isinstance(module, _NORM_TYPES) or name == "bias"
            (no_decay if exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: schema.OptimizerConfig, lr: float, implementation: str | None = None
                    ) -> torch.optim.Optimizer:
    """SGD or AdamW at `lr`; `implementation`: speed.SpeedPlan's choice (default `cfg.implementation`)."""
    groups = param_groups(model, cfg.weight_decay, cfg.exempt_bias_norm)
    impl = _IMPLEMENTATIONS.get(implementation or cfg.implementation, {})
    if isinstance(cfg, schema.SGDConfig):
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **impl)
    if isinstance(cfg, schema.AdamWConfig):
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, **impl)
    raise ValueError(f"unknown optimizer config {type(cfg).__name__}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: schema.SchedulerConfig, max_epochs: int, total_steps: int
) -> dict[str, Any] | None:
    """A Lightning `lr_scheduler` dict (with interval/monitor), or None for a constant LR."""
    if isinstance(cfg, schema.ConstantConfig):
        return None
    lr_scheduler = torch.optim.lr_scheduler
    if isinstance(cfg, schema.MultiStepConfig):
        return {"scheduler": lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma), "interval": "epoch"}
    if isinstance(cfg, schema.PiecewiseConfig):
        piecewise = functools.partial(_piecewise, list(cfg.milestones), list(cfg.scales))  # picklable
        return {"scheduler": lr_scheduler.LambdaLR(optimizer, piecewise), "interval": "epoch"}
    if isinstance(cfg, schema.CosineConfig):
        steps_per_epoch = max(1, total_steps // max(1, max_epochs))
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
        cosine = functools.partial(_warmup_cosine, warmup, total_steps, cfg.min_lr_ratio)
        return {"scheduler": lr_scheduler.LambdaLR(optimizer, cosine), "interval": "step"}
    if isinstance(cfg, schema.OneCycleConfig):
        one_cycle = lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                            total_steps=max(2, total_steps), pct_start=cfg.pct_start,
                                            div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor)
        return {"scheduler": one_cycle, "interval": "step"}
    if isinstance(cfg, schema.PlateauConfig):
        mode = "min" if cfg.monitor.endswith("loss") else "max"
        plateau = LimitedPlateau(optimizer, mode=mode, factor=cfg.factor, patience=cfg.patience,
                                 threshold=cfg.threshold, min_lr=cfg.min_lr, max_reductions=cfg.max_reductions,
                                 stop_below_ratio=cfg.stop_below_ratio)
        return {"scheduler": plateau, "interval": "epoch", "monitor": cfg.monitor, "strict": True}
    raise ValueError(f"unknown scheduler config {type(cfg).__name__}")


def _closed_form(scheduler: Any) -> bool:
    """Whether the scheduler's LR is a function of its step alone, unlike a plateau's."""
    return isinstance(scheduler, (torch.optim.lr_scheduler.LambdaLR, torch.optim.lr_scheduler.OneCycleLR))


def planned_state(scheduler: Any) -> dict[str, Any] | None:
    """The shape of a freshly built closed-form schedule, for `keep_plan`."""
    return copy.deepcopy(scheduler.state_dict()) if _closed_form(scheduler) else None


def planned_groups(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each param group's settings as the config built them (weight decay, momentum, one-cycle's max_lr...)."""
    return [{k: copy.deepcopy(v) for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def keep_settings(optimizer: torch.optim.Optimizer, planned: list[dict[str, Any]], scheduler: Any) -> None:
    """After a resume: the optimizer's settings are the current config's (`planned_groups`), except what a
    scheduler moves (a plateau's cut LR, one-cycle's momentum); a closed-form LR is set by `keep_plan`."""
    moved = set()
    if scheduler is not None and not _closed_form(scheduler):
        moved.add("lr")  # ReduceLROnPlateau: the LR is the cuts so far
    if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and scheduler.cycle_momentum:
        moved |= {"momentum", "betas"}
    for group, settings in zip(optimizer.param_groups, planned, strict=True):
        group.update({k: v for k, v in settings.items() if k not in moved})


def keep_plan(scheduler: Any, planned: dict[str, Any]) -> None:
    """After a resume: continue at the checkpoint's step, on the schedule the current config plans (`planned`):
    Lightning restores a scheduler's whole state, its length included (cosine would stay at its floor)."""
    position = {k: v for k, v in scheduler.state_dict().items() if k in compat.SCHEDULER_POSITION_KEYS}
    scheduler.load_state_dict({**copy.deepcopy(planned), **position})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # get_lr outside step(): fine for closed-form schedules
        try:
            lrs = scheduler.get_lr()
        except ValueError:  # one-cycle past a shortened end: Lightning stops at max_epochs anyway
            return
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    compat.set_last_lr(scheduler, list(lrs))


class LimitedPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """ReduceLROnPlateau that sets `exhausted` (the LightningModule then stops) at the plateau after
    `max_reductions` cuts (that cut is undone), or once a cut takes the LR below `stop_below_ratio` x its start."""

    def __init__(self, optimizer: torch.optim.Optimizer, max_reductions: int | None = None,
                 stop_below_ratio: float | None = None, **kwargs: Any) -> None:
        super().__init__(optimizer, **kwargs)
        self.max_reductions = max_reductions
        self.stop_below_ratio = stop_below_ratio
        self.start_lr = float(optimizer.param_groups[0]["lr"])
        self.reductions = 0
        self.exhausted = False

    def step(self, metrics: Any, epoch: Any = None) -> None:  # type: ignore[override]
        before = [group["lr"] for group in self.optimizer.param_groups]
        super().step(metrics) if epoch is None else super().step(metrics, epoch)
        if [group["lr"] for group in self.optimizer.param_groups] == before:
            return
        if self.max_reductions is not None and self.reductions >= self.max_reductions:
            for group, lr in zip(self.optimizer.param_groups, before, strict=True):
                group["lr"] = lr  # no cut left: training is over instead
            compat.set_last_lr(self, before)
            self.exhausted = True
            return
        self.reductions += 1
        if self.stop_below_ratio and self.optimizer.param_groups[0]["lr"] < self.stop_below_ratio * self.start_lr:
            self.exhausted = True


def _piecewise(milestones: list[int], scales: list[float], epoch: int) -> float:
    """LR multiplier: scales[i] for epochs in [milestones[i-1], milestones[i])."""
    return scales[sum(epoch >= m for m in milestones)]


def _warmup_cosine(warmup: int, total: int, floor: float, step: int) -> float:
    """LR multiplier: linear warm-up over `warmup` steps, then cosine to `floor` at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
