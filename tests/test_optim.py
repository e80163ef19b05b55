"""Optimizers, weight-decay exemption and LR schedules."""

import torch
from torch import nn

from nin_lightning.config import (
    AdamWConfig,
    CosineConfig,
    MultiStepConfig,
    OneCycleConfig,
    PlateauConfig,
    SGDConfig,
)
from nin_lightning.models import NiN
from nin_lightning.optim import build_optimizer, build_scheduler, param_groups
from tests.conftest import lr_trace as lrs


def test_exempt_bias_norm_splits_groups():
    net = NiN(10, 1, "mnist", batch_norm=True)
    decay, no_decay = param_groups(net, 1e-4, exempt_bias_norm=True)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 4 for p in decay["params"])          # conv weights only
    assert all(p.ndim == 1 for p in no_decay["params"])       # BN weight/bias
    assert len(param_groups(net, 1e-4, exempt_bias_norm=False)) == 1


def test_sgd_and_adamw():
    net = nn.Linear(2, 2)
    sgd = build_optimizer(net, SGDConfig(lr=0.1, momentum=0.9, nesterov=True), lr=0.2)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["lr"] == 0.2
    adamw = build_optimizer(net, AdamWConfig(), lr=1e-3)
    assert isinstance(adamw, torch.optim.AdamW)


def test_cosine_warmup_rises_then_decays():
    opt = build_optimizer(nn.Linear(2, 2), SGDConfig(), lr=1.0)
    sched = build_scheduler(opt, CosineConfig(warmup_epochs=1), max_epochs=10, total_steps=100)
    assert sched["interval"] == "step"
    seq = lrs(sched["scheduler"], opt, 100)
    assert seq[0] < 0.2 and max(seq) > 0.95 and seq[-1] < 0.01
    assert seq.index(max(seq)) in range(9, 12)


def test_onecycle_peaks_at_lr():
    opt = build_optimizer(nn.Linear(2, 2), SGDConfig(), lr=0.5)
    sched = build_scheduler(opt, OneCycleConfig(pct_start=0.25), max_epochs=1, total_steps=40)
    seq = lrs(sched["scheduler"], opt, 40)
    assert abs(max(seq) - 0.5) < 1e-6 and seq[0] < 0.05 and seq[-1] < 1e-3


def test_multistep_and_plateau():
    opt = build_optimizer(nn.Linear(2, 2), SGDConfig(), lr=1.0)
    sched = build_scheduler(opt, MultiStepConfig(milestones=[2, 4], gamma=0.1), max_epochs=6, total_steps=6)
    assert [round(x, 6) for x in lrs(sched["scheduler"], opt, 6)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    opt = build_optimizer(nn.Linear(2, 2), SGDConfig(), lr=1.0)
    plateau = build_scheduler(opt, PlateauConfig(patience=1, monitor="train/acc"), max_epochs=5, total_steps=5)
    assert plateau["monitor"] == "train/acc"
    for acc in (0.5, 0.5, 0.5):
        plateau["scheduler"].step(acc)
    assert abs(opt.param_groups[0]["lr"] - 0.1) < 1e-9


def test_exempt_bias_norm_without_batch_norm_exempts_conv_biases():
    net = NiN(10, 1, "mnist", batch_norm=False)
    decay, no_decay = param_groups(net, 1e-4, exempt_bias_norm=True)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert {id(p) for p in decay["params"]} == {id(m.weight) for m in convs}
    assert {id(p) for p in no_decay["params"]} == {id(m.bias) for m in convs}


def test_a_resumed_schedule_keeps_its_step_but_takes_the_new_length():
    """keep_plan: a cosine schedule restored from a 10-step run and planned again for 20 steps continues
    at step 10 of 20 (it would otherwise stay at its floor), while the same plan changes nothing."""
    from nin_lightning.optim import keep_plan, planned_state

    def cosine(total: int):
        opt = build_optimizer(nn.Linear(2, 2), SGDConfig(), lr=1.0)
        return opt, build_scheduler(opt, CosineConfig(warmup_epochs=0), max_epochs=1, total_steps=total)["scheduler"]

    opt, old = cosine(10)
    lrs(old, opt, 10)
    saved = old.state_dict()
    assert opt.param_groups[0]["lr"] < 1e-9
    opt2, new = cosine(20)
    plan = planned_state(new)
    new.load_state_dict(saved)  # what Lightning's restore does
    keep_plan(new, plan)
    assert new.last_epoch == 10 and abs(opt2.param_groups[0]["lr"] - 0.5) < 1e-6  # half way down the new cosine
    assert abs(lrs(new, opt2, 11)[-1]) < 1e-9  # and reaches the floor at step 20
    opt3, same = cosine(10)
    lrs(same, opt3, 4)
    before = (same.state_dict(), opt3.param_groups[0]["lr"])
    keep_plan(same, planned_state(cosine(10)[1]))
    assert (same.state_dict(), opt3.param_groups[0]["lr"]) == before
