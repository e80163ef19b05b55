"""The composed config as a tree on the console (rank 0)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.tree import Tree


def _add(tree: Tree, node: Any) -> None:
    for key, value in node.items():
        if isinstance(value, dict):
            _add(tree.add(f"[bold]{key}[/bold]"), value)
        else:
            tree.add(f"{key}: [cyan]{value!r}[/cyan]")


def print_config_tree(config: dict[str, Any], order: tuple[str, ...] = ("dataset", "model", "optimizer")) -> None:
    """The resolved config as a rich tree, groups first (rank 0 only)."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
    from rich import print as rich_print
    from rich.tree import Tree

    if getattr(rank_zero_only, "rank", 0) != 0:
        return
    tree = Tree("[bold]config[/bold]")
    ordered = {k: config[k] for k in order if k in config} | config
    _add(tree, ordered)
    rich_print(tree)
