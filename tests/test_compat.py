"""Every private API that nin_lightning/compat.py uses still exists and does what we rely on.

A new release of torch, Lightning or wandb that changes one fails here, by name, instead of somewhere
deep in a run."""

from __future__ import annotations

import torch

from nin_lightning import compat


def test_fused_optimizer_devices_are_listed():
    devices = compat.fused_optimizer_devices()
    assert "cuda" in devices and all(isinstance(d, str) for d in devices)


def test_dynamo_support_is_queried():
    assert isinstance(compat.dynamo_supported(), bool)


def test_scheduler_position_keys_are_in_the_state_dicts():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    state = sched.state_dict()
    assert {"last_epoch", "_step_count", "_last_lr"} <= set(state)
    assert {"last_epoch", "_step_count", "_last_lr"} <= compat.SCHEDULER_POSITION_KEYS


def test_set_last_lr_is_what_get_last_lr_returns():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    for sched in (torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0),
                  torch.optim.lr_scheduler.ReduceLROnPlateau(opt)):
        compat.set_last_lr(sched, [0.05])
        assert sched.get_last_lr() == [0.05]


def test_wandb_flush_interval_is_a_setting():
    import wandb

    assert compat.wandb_flush_often(wandb.Settings) == {"x_transaction_log_flush_interval": 2.0}
    wandb.Settings(**compat.wandb_flush_often(wandb.Settings))  # accepted


def test_dynamo_counts_graphs_and_breaks():
    graphs, breaks = compat.dynamo_counts()

    def f(x):
        return torch.relu(x) + 1

    torch.compile(f, backend="eager")(torch.ones(3))
    assert compat.dynamo_counts() == (graphs + 1, breaks)
    explained = compat.dynamo_explain(f, torch.ones(3))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


def test_lightnings_per_step_sigterm_broadcast_can_be_dropped():
    """Lightning 2.6 calls `_broadcast_sigterm_tensor` at every DDP step; the attribute must still exist."""
    import lightning as L
    from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop

    assert callable(getattr(_TrainingEpochLoop, "_broadcast_sigterm_tensor", None))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    compat.drop_lightning_sigterm_broadcast(trainer)
    assert trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor() is None


def test_recompiles_are_collected_in_process_while_asked():
    """torch._logging.set_logs(recompiles=True) reaches the `torch._dynamo` logger (benchmarks/gpu_check.py
    counts a fit's recompiles with it); outside the block nothing is collected."""

    def f(x):
        return x * 2

    compiled = torch.compile(f, backend="eager", dynamic=False)
    with compat.recompile_log() as found:
        compiled(torch.ones(2))
        compiled(torch.ones(3))  # a new shape under static shapes: one recompile
    compiled(torch.ones(4))
    assert len(found) == 1 and found[0].startswith("Recompiling function f"), found
