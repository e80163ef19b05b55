"""Every use of another library's private (underscored or experimental) API, in one place, each with why.

Checked on torch 2.14.1, Lightning 2.6.6, wandb 0.31.0 (the versions pinned for CI). `tests/test_compat.py`
fails loudly when a new release removes or changes one of these. A leaf module: no package imports, and
each library is imported only inside the function that needs it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

# torch.optim.lr_scheduler.LRScheduler: the state-dict entries that say WHERE a schedule is (the rest say
# what shape it has). optim.keep_plan keeps these from a checkpoint and takes the shape from the current
# config, so that an extended run's schedule stretches. No public API splits the two.
SCHEDULER_POSITION_KEYS = frozenset({"last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step",
                                     "_is_initial"})


def set_last_lr(scheduler: Any, lrs: list[float]) -> None:
    """What `scheduler.get_last_lr()` returns, after the LRs were set by hand (optim.keep_plan after a resume,
    optim.LimitedPlateau undoing a cut). LRScheduler keeps it in `_last_lr`, set only inside `step()`."""
    scheduler._last_lr = list(lrs)


def fused_optimizer_devices() -> tuple[str, ...]:
    """Device types with fused SGD/AdamW kernels. torch has no public query; without one, `fused=True`
    fails only at the first step. (torch.utils._foreach_utils._get_fused_kernels_supported_devices)"""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return tuple(_get_fused_kernels_supported_devices())


def dynamo_supported() -> bool:
    """Whether torch.compile can run on this Python (torch._dynamo.is_dynamo_supported; no public twin)."""
    from torch._dynamo import is_dynamo_supported

    return bool(is_dynamo_supported())


def wandb_flush_often(settings: Any, every_s: float = 2.0) -> dict[str, Any]:
    """wandb.Settings keyword that writes the offline run file every EVERY_S seconds (W&B's default: 15).

    Slurm's SIGTERM on preemption also stops W&B's service process, which loses what it had not written.
    `x_transaction_log_flush_interval` is an experimental (x_) setting: omitted when a release drops it."""
    field = "x_transaction_log_flush_interval"
    return {field: every_s} if field in getattr(settings, "model_fields", {}) else {}


def dynamo_counts() -> tuple[int, int]:
    """(graphs compiled, graph breaks) by torch.compile in this process so far: what a run records as
    `speed/compiled_graphs` and `speed/graph_breaks`, so metrics.json says how often it really compiled.
    torch has no public count; dynamo keeps one in `torch._dynamo.utils.counters` (the same numbers
    TORCH_LOGS=recompiles,graph_breaks prints one by one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))


def dynamo_explain(fn: Any, *args: Any) -> Any:
    """`torch._dynamo.explain(fn)(*args)`: graphs and graph breaks of one call, with their reasons (the
    graph-break check of tests/test_gpu_fast_path.py). Documented, but only under the private torch._dynamo."""
    import torch._dynamo

    return torch._dynamo.explain(fn)(*args)


@contextlib.contextmanager
def recompile_log() -> Iterator[list[str]]:
    """The "Recompiling function ..." messages of torch.compile while the block runs (what TORCH_LOGS=recompiles
    prints, one per recompile), collected in process: `torch._logging.set_logs(recompiles=True)` (documented,
    but only under the private torch._logging) turns them on and they reach the `torch._dynamo` logger. Torch's
    logging settings are back to its defaults after (benchmarks/gpu_check.py counts a fit's recompiles)."""
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
    """Stop Lightning 2.6 from broadcasting its SIGTERM flag at every DDP training step (a collective plus a
    `.item()`: a host sync per step). That flag is set only by Lightning's own SIGTERM handler, which
    PreemptionCheckpoint replaces (it broadcast inside the signal handler and could deadlock), so the
    broadcast always carried a 0; the ranks agree on signals every callbacks.check_every_n_steps steps
    instead (callbacks/agreement.py). On this Trainer only: `fit_loop.epoch_loop._broadcast_sigterm_tensor`."""
    loop = trainer.fit_loop.epoch_loop
    if hasattr(loop, "_broadcast_sigterm_tensor"):
        loop._broadcast_sigterm_tensor = lambda: None


def lightning_child_ranks(trainer: Any) -> list[Any]:
    """The rank processes (subprocess.Popen) that Lightning's script launcher started for a single DDP run:
    `trainer.strategy.launcher.procs` of the private `_SubprocessScriptLauncher` (no public accessor).
    Lightning kills them on Ctrl-C only; when rank 0 fails otherwise, the run stops them (cluster.LocalRanks)."""
    launcher = getattr(trainer.strategy, "launcher", None)
    return list(getattr(launcher, "procs", None) or [])


def report_spec(report: Any) -> dict[str, Any]:
    """What `wandb_workspaces.reports.v2.Report.save()` sends to W&B's API as the report's `spec` (its
    `_to_model().spec`, dumped by alias without None), so a test checks the published report offline.
    wandb-workspaces has no public method that returns it without saving."""
    import json

    return json.loads(report._to_model().spec.model_dump_json(by_alias=True, exclude_none=True))
