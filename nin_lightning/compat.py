"""Every use of another library's private (underscored or experimental) API, in one place; why: docs/architecture.md.

Checked on torch 2.14.1, Lightning 2.6.6, wandb 0.31.0; `tests/test_compat.py` fails loudly when a release
changes one. A leaf module: each library is imported only inside the function that needs it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

# LRScheduler's state-dict entries that say WHERE a schedule is (the rest say what shape it has): optim.keep_plan
# keeps these from a checkpoint and takes the shape from the current config, so an extended run's schedule stretches.
SCHEDULER_POSITION_KEYS = frozenset({"last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step",
                                     "_is_initial"})


def set_last_lr(scheduler: Any, lrs: list[float]) -> None:
    """What `scheduler.get_last_lr()` returns after the LRs were set by hand (LRScheduler sets it only in `step()`)."""
    scheduler._last_lr = list(lrs)


def fused_optimizer_devices() -> tuple[str, ...]:
    """Device types with fused SGD/AdamW kernels (without them, `fused=True` fails only at the first step)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return tuple(_get_fused_kernels_supported_devices())


def dynamo_supported() -> bool:
    """Whether torch.compile can run on this Python."""
    from torch._dynamo import is_dynamo_supported

    return bool(is_dynamo_supported())


def wandb_flush_often(settings: Any, every_s: float = 2.0) -> dict[str, Any]:
    """wandb.Settings keyword that writes the offline run file every EVERY_S seconds (W&B's default: 15), since
    Slurm's SIGTERM also stops W&B's service; the experimental setting is omitted when a release drops it."""
    field = "x_transaction_log_flush_interval"
    return {field: every_s} if field in getattr(settings, "model_fields", {}) else {}


def dynamo_counts() -> tuple[int, int]:
    """(graphs compiled, graph breaks) by torch.compile in this process so far (metrics.json's `speed/...`)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))


def dynamo_explain(fn: Any, *args: Any) -> Any:
    """`torch._dynamo.explain(fn)(*args)`: graphs and graph breaks of one call, with their reasons."""
    import torch._dynamo

    return torch._dynamo.explain(fn)(*args)


@contextlib.contextmanager
def recompile_log() -> Iterator[list[str]]:
    """The "Recompiling function ..." messages of torch.compile while the block runs (TORCH_LOGS=recompiles, in
    process); torch's logging settings are back to its defaults after."""
    import torch._logging

    found: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("Recompiling function"):
                found.append(message)

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger("torch._dynamo")
    torch._logging.set_logs(recompiles=True)
    logger.addHandler(handler)
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        torch._logging.set_logs()


def drop_lightning_sigterm_broadcast(trainer: Any) -> None:
    """Stop Lightning 2.6 from broadcasting its SIGTERM flag at every DDP training step (a host sync per step)
    on this Trainer: only Lightning's own handler sets it, which PreemptionCheckpoint replaces."""
    loop = trainer.fit_loop.epoch_loop
    if hasattr(loop, "_broadcast_sigterm_tensor"):
        loop._broadcast_sigterm_tensor = lambda: None


def lightning_child_ranks(trainer: Any) -> list[Any]:
    """The rank processes that Lightning's script launcher started for a single DDP run (`launcher.procs`)."""
    launcher = getattr(trainer.strategy, "launcher", None)
    return list(getattr(launcher, "procs", None) or [])


def report_spec(report: Any) -> dict[str, Any]:
    """What a wandb_workspaces Report's `save()` sends as its `spec`, so a test checks a report offline."""
    return json.loads(report._to_model().spec.model_dump_json(by_alias=True, exclude_none=True))
