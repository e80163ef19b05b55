"""What the user reads: status lines (also in the run's log file) and the composed config as a tree."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.tree import Tree

# Imported by the error path (errors.fail), so importing this module must stay cheap: no lightning, no rich.

_LOG = logging.getLogger("nin_lightning")


def to_log_files(line: str, level: int = logging.INFO) -> None:
    """LINE into the log files of the root logger (RUN_DIR/train.log under Hydra), not the console."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if handlers:
        record = _LOG.makeRecord(_LOG.name, level, __file__, 0, line, None, None)
        for handler in handlers:
            handler.handle(record)


def show(line: str) -> None:
    """LINE on stdout, and in the run's log file."""
    print(line, flush=True)
    to_log_files(line)


def _rank() -> int:
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0))


def say(message: str) -> None:
    """One line of status for the user (rank 0 only), also in the run's log file."""
    if _rank() == 0:
        show(f"[nin] {message}")


def _add(tree: Tree, node: Any) -> None:
    for key, value in node.items():
        if isinstance(value, dict):
            _add(tree.add(f"[bold]{key}[/bold]"), value)
        else:
            tree.add(f"{key}: [cyan]{value!r}[/cyan]")


def print_config_tree(config: dict[str, Any], order: tuple[str, ...] = ("dataset", "model", "optimizer")) -> None:
    """The resolved config as a rich tree, groups first (rank 0 only)."""
    from rich import print as rich_print
    from rich.tree import Tree

    if _rank() != 0:
        return
    tree = Tree("[bold]config[/bold]")
    ordered = {k: config[k] for k in order if k in config} | config
    _add(tree, ordered)
    rich_print(tree)
