"""The command line's part of a job, before torch loads; `train.py` and each DDP rank (cli/ddp_rank.py) run it."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from nin_lightning.cli.hydra_job import job_context
from nin_lightning.cli.options import refuse_schema_choices
from nin_lightning.cli.quiet import quiet_console, quiet_libraries
from nin_lightning.cluster.slurm import env_rank
from nin_lightning.config import JobContext, TrainConfig, to_plain_dict, validate
from nin_lightning.rundir.closing import abandoned_if_refused, seed_of


def _add(tree: Any, node: dict[str, Any]) -> None:
    for key, value in node.items():
        if isinstance(value, dict):
            _add(tree.add(f"[bold]{key}[/bold]"), value)
        else:
            tree.add(f"{key}: [cyan]{value!r}[/cyan]")


def print_config_tree(config: dict[str, Any]) -> None:
    """The resolved config as a rich tree, groups first (rank 0 only)."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
    from rich import print as rich_print
    from rich.tree import Tree

    if getattr(rank_zero_only, "rank", 0) == 0:
        tree = Tree("[bold]config[/bold]")
        _add(tree, {k: config[k] for k in ("dataset", "model", "optimizer") if k in config} | config)
        rich_print(tree)


def prepare_job(cfg: DictConfig) -> tuple[JobContext, TrainConfig]:
    """Hydra's runtime read once; the config checked before torch loads (a refusal leaves no dir); the console
    quiet (the full config tree only with verbose=true); then torch and Lightning loaded, their noise filtered."""
    job = job_context(OmegaConf.to_yaml(cfg))
    with abandoned_if_refused(job, env_rank() == 0, seed_of(cfg)):  # Hydra made the run dir already
        refuse_schema_choices(job.choices)
        conf = validate(cfg)
    quiet_console(verbose=conf.verbose, sweep=job.multirun)
    if conf.verbose:
        print_config_tree(to_plain_dict(cfg))
    import lightning  # noqa: F401  torch and Lightning load here, once the config is known to be good

    quiet_libraries()  # after the import: Lightning adds its own console handler then, Hydra's takes over
    return job, conf

