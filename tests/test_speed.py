"""Speed switches: the decision logic on faked devices, the CPU paths for real, and the schedulers they use."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nin_lightning import speed
from nin_lightning.config import JobContext, PiecewiseConfig, PlateauConfig, SGDConfig, validate
from nin_lightning.errors import UserError
from nin_lightning.models import NiN
from nin_lightning.optim import LimitedPlateau, build_optimizer, build_scheduler


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device as `speed` sees it: capability, bf16 and Triton are set per test."""

    def make(capability=(8, 0), bf16=True, triton=True):
        """bf16: whether the capability is one with native bf16 (sm >= 80); torch's own check decides."""
        assert bf16 == (capability >= (8, 0)), "native bf16 comes with sm >= 80"
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a, **k: SimpleNamespace(
            major=capability[0], minor=capability[1], total_memory=16 << 30))
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
        monkeypatch.setattr(speed, "_triton_available", lambda: triton)
        monkeypatch.setattr(speed, "_cpu_bf16_native", lambda: False)

    return make


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(speed, "_mps_available", lambda: False)
    monkeypatch.setattr(speed, "_cpu_bf16_native", lambda: False)


def plan_for(compose_cfg, *overrides):
    return speed.resolve(validate(compose_cfg(*overrides)))


def test_auto_on_an_ampere_gpu_is_the_full_fast_path(compose_cfg, fake_gpu):
    fake_gpu(capability=(8, 0), bf16=True)
    plan = plan_for(compose_cfg, "dataset=cifar10")
    assert plan.device == "cuda"
    assert (plan.precision, plan.channels_last, plan.compile, plan.benchmark) == ("bf16-mixed", True, True, True)
    assert plan.optimizer_impl == "fused" and plan.tta is True and plan.notices == ()


def test_auto_on_a_gpu_without_bf16_uses_fp16_and_explicit_bf16_falls_back(compose_cfg, fake_gpu):
    fake_gpu(capability=(7, 0), bf16=False)
    assert plan_for(compose_cfg).precision == "16-mixed"
    plan = plan_for(compose_cfg, "trainer.precision=bf16-mixed")
    assert plan.precision == "16-mixed" and len(plan.notices) == 1 and "no bf16" in plan.notices[0]


def test_old_gpu_without_triton_gets_no_compile_and_no_channels_last(compose_cfg, fake_gpu):
    fake_gpu(capability=(6, 1), bf16=False, triton=False)
    plan = plan_for(compose_cfg)
    assert not plan.compile and not plan.channels_last
    plan = plan_for(compose_cfg, "model.compile=true")
    assert not plan.compile and "Triton" in plan.notices[0]


def test_deterministic_turns_cudnn_benchmark_off(compose_cfg, fake_gpu):
    fake_gpu()
    assert plan_for(compose_cfg, "trainer.deterministic=true").benchmark is False
    plan = plan_for(compose_cfg, "trainer.deterministic=true", "trainer.benchmark=true")
    assert plan.benchmark is False and "deterministic" in plan.notices[0]


def test_trainer_cpu_on_a_gpu_machine_is_a_cpu_plan(compose_cfg, fake_gpu):
    fake_gpu()
    plan = plan_for(compose_cfg, "trainer=cpu")
    assert plan.device == "cpu" and plan.precision == "32-true" and not plan.compile


def test_cpu_with_native_bf16_trains_in_bf16(compose_cfg, no_gpu, monkeypatch):
    monkeypatch.setattr(speed, "_cpu_bf16_native", lambda: True)
    plan = plan_for(compose_cfg)
    assert plan.precision == "bf16-mixed" and plan.notices == ()


def test_cpu_auto(compose_cfg, no_gpu):
    plan = plan_for(compose_cfg)
    assert plan.device == "cpu"
    assert (plan.precision, plan.compile, plan.benchmark) == ("32-true", False, False)
    assert plan.channels_last is speed.CPU_CHANNELS_LAST
    assert plan.optimizer_impl == "fused"  # torch has fused SGD/AdamW kernels for CPU
    assert plan.notices == ()


@pytest.mark.parametrize(("override", "field", "value", "words"), [
    ("trainer.benchmark=true", "benchmark", False, "CUDA"),
    ("trainer.precision=16-mixed", "precision", "bf16-mixed", "CPU"),
])
def test_cpu_fallbacks_say_one_line(compose_cfg, no_gpu, override, field, value, words):
    plan = plan_for(compose_cfg, override)
    assert getattr(plan, field) == value
    assert len(plan.notices) == 1 and words in plan.notices[0] and "\n" not in plan.notices[0]


def test_compile_without_a_cpu_compiler_falls_back(compose_cfg, no_gpu, monkeypatch):
    monkeypatch.setattr(speed.shutil, "which", lambda name: None)
    plan = plan_for(compose_cfg, "model.compile=true")
    assert plan.compile is False and "C++ compiler" in plan.notices[0]


def test_fused_where_unsupported_falls_back_to_foreach(compose_cfg, no_gpu, monkeypatch):
    monkeypatch.setattr(speed, "_fused_supported", lambda device: False)
    assert plan_for(compose_cfg).optimizer_impl == "foreach"
    plan = plan_for(compose_cfg, "optimizer.implementation=fused")
    assert plan.optimizer_impl == "foreach" and "foreach" in plan.notices[0]


def test_explicit_values_are_kept_and_resolution_is_idempotent(compose_cfg, no_gpu):
    conf = validate(compose_cfg("model.channels_last=false", "optimizer.implementation=for_loop",
                                "trainer.precision=bf16-mixed"))
    plan = speed.resolve(conf)
    assert (plan.channels_last, plan.optimizer_impl, plan.precision) == (False, "for_loop", "bf16-mixed")
    again = speed.resolve(conf)  # the config is left as the user wrote it: resolving twice gives one plan
    assert again == plan and again.notices == ()


def test_tta_follows_flip_and_never_applies_to_digits(compose_cfg, no_gpu):
    assert plan_for(compose_cfg, "dataset=cifar100").tta is True
    assert plan_for(compose_cfg, "dataset=cifar10", "dataset.flip=false").tta is False
    for name in ("digits", "mnist", "svhn"):
        assert plan_for(compose_cfg, f"dataset={name}").tta is False
    with pytest.raises(UserError, match=r"dataset\.tta=true"):
        validate(compose_cfg("dataset=mnist", "dataset.tta=true"))


@pytest.mark.parametrize("override", ["model.channels_last=maybe", "model.compile=2", "dataset.tta=yes",
                                      "optimizer.implementation=turbo", "trainer.benchmark=fast"])
def test_bad_switch_values_are_one_line_errors(compose_cfg, override):
    with pytest.raises(UserError) as err:
        validate(compose_cfg(override))
    assert override.split("=")[0] in str(err.value) and "\n" not in str(err.value)


# --- the CPU paths, for real -------------------------------------------------------------------------

def _twin_nets(channels_last: bool) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    a = NiN(10, 1, "mnist", width=0.25, dropout=0.0, batch_norm=True, init="kaiming")
    b = NiN(10, 1, "mnist", width=0.25, dropout=0.0, batch_norm=True, init="kaiming")
    b.load_state_dict(a.state_dict())
    return a, speed.prepare_model(b, channels_last=channels_last, compile=False)


def test_channels_last_trains_on_cpu_like_contiguous():
    ref, fast = _twin_nets(channels_last=True)
    assert fast.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))
    outs = []
    for net, inp in ((ref, x), (fast, x.contiguous(memory_format=torch.channels_last))):
        loss = nn.functional.cross_entropy(net(inp), y)
        loss.backward()
        outs.append((loss.item(), net.features[0][0].weight.grad.clone()))
    assert outs[0][0] == pytest.approx(outs[1][0], rel=1e-4)
    assert torch.allclose(outs[0][1], outs[1][1], rtol=1e-3, atol=1e-5)
    assert list(ref.state_dict()) == list(fast.state_dict())  # checkpoints stay interchangeable


@pytest.mark.parametrize("impl", ["fused", "foreach", "for_loop", "auto"])
def test_every_optimizer_implementation_steps_the_same_on_cpu(impl):
    def step(implementation: str) -> torch.Tensor:
        torch.manual_seed(0)
        net = nn.Linear(5, 3)
        opt = build_optimizer(net, SGDConfig(lr=0.1, momentum=0.9, nesterov=True, implementation=implementation),
                              lr=0.1)
        for _ in range(3):
            net(torch.ones(2, 5)).square().sum().backward()
            opt.step()
            opt.zero_grad()
        return net.weight.detach()

    assert torch.allclose(step(impl), step("for_loop"), atol=1e-6)


@pytest.mark.slow
def test_torch_compile_works_on_cpu_with_a_tiny_model():
    """Inductor on CPU compiles C++; ~30 s cold for this model here (the budget is 60 s)."""
    if not speed._cpu_compiler_available():
        pytest.skip("no C++ compiler: the fallback is tested above")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(2, 1, 8, 8)
    eager = net(x).detach()
    started = time.perf_counter()
    speed.prepare_model(net, channels_last=False, compile=True)
    out = net(x)
    out.sum().backward()
    assert time.perf_counter() - started < 120
    assert torch.allclose(out.detach(), eager, atol=1e-5)
    assert list(net.state_dict()) == ["0.weight", "0.bias"]  # in-place compile: no `_orig_mod.` prefix


def test_tta_averages_the_image_and_its_mirror():
    from nin_lightning.module import NiNClassifier

    torch.manual_seed(0)
    module = NiNClassifier(10, 3, "cifar", width=0.1, dropout=0.0, batch_norm=False, tta=True).eval()
    net = module.net
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = 0.5 * (net(x) + net(x.flip(-1)))
        assert torch.allclose(module.evaluate(x), expected, atol=1e-6)
        module.tta = False
        assert torch.allclose(module.evaluate(x), net(x), atol=1e-6)


# --- the schedulers the presets need ----------------------------------------------------------------

def test_piecewise_expresses_keras_lr_values():
    opt = build_optimizer(nn.Linear(2, 2), SGDConfig(), lr=0.01)
    sched = build_scheduler(opt, PiecewiseConfig(milestones=[2, 4], scales=[1.0, 0.5, 0.1]), 6, 6)["scheduler"]
    lrs = []
    for _ in range(6):
        lrs.append(round(opt.param_groups[0]["lr"], 8))
        opt.step()
        sched.step()
    assert lrs == [0.01, 0.01, 0.005, 0.005, 0.001, 0.001]


def test_piecewise_needs_one_scale_more_than_milestones():
    with pytest.raises(UserError, match=r"scheduler\.scales"):
        PiecewiseConfig(milestones=[80, 140], scales=[1.0, 0.5])


def test_limited_plateau_cuts_twice_then_is_exhausted():
    opt = build_optimizer(nn.Linear(2, 2), SGDConfig(), lr=0.1)
    sched = build_scheduler(opt, PlateauConfig(monitor="train/acc", patience=0, max_reductions=2), 10, 10)
    plateau = sched["scheduler"]
    assert isinstance(plateau, LimitedPlateau)
    lrs = []
    for _ in range(5):  # the same accuracy every epoch: a plateau after every epoch but the first
        plateau.step(0.5)
        lrs.append(opt.param_groups[0]["lr"])
        if plateau.exhausted:
            break
    assert lrs == pytest.approx([0.1, 0.01, 0.001, 0.001]) and plateau.reductions == 2
    assert plateau.exhausted


@pytest.mark.slow
def test_plateau_max_reductions_ends_a_real_run(compose_cfg, tmp_path):
    """After max_reductions cuts, the next plateau stops the Trainer (the paper's rule)."""
    import json

    from nin_lightning.run import train

    cfg = compose_cfg("experiment=quickstart", "scheduler=plateau", "scheduler.monitor=train/acc",
                      "scheduler.patience=0", "scheduler.threshold=10", "scheduler.max_reductions=1",
                      "trainer.max_epochs=10", "logger=none", "trainer.enable_progress_bar=false",
                      "trainer.limit_train_batches=2", "dataset.val_size=100", "model.width=0.25")
    train(cfg, JobContext(run_dir=tmp_path / "run"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # epoch 0 sets the best, epoch 1 is a plateau (cut 1), epoch 2 is a plateau with no cut left: stop
    assert metrics["status"] == "completed" and metrics["epochs"] == 3


def test_limited_plateau_stops_once_lr_is_below_the_ratio():
    """The 100-line script's rule: lr 0.01 -> 1e-3 -> 1e-4 (not < 1e-4 in floating point) -> 1e-5: stop."""
    opt = build_optimizer(nn.Linear(2, 2), SGDConfig(), lr=0.01)
    plateau = build_scheduler(opt, PlateauConfig(monitor="train/acc", patience=0, stop_below_ratio=0.01), 9, 9)
    plateau = plateau["scheduler"]
    epochs = 0
    while not plateau.exhausted and epochs < 10:
        plateau.step(0.5)
        epochs += 1
    assert plateau.exhausted and plateau.reductions == 3 and epochs == 4
    assert opt.param_groups[0]["lr"] < 1e-4
