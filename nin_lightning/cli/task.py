"""The task function behind `python train.py` and the DDP ranks' entry point: Hydra's job -> `run.train`."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from nin_lightning.cli.console import print_config_tree
from nin_lightning.cli.hydra_job import hydra_choices, job_context
from nin_lightning.cli.options import refuse_schema_choices
from nin_lightning.cli.quiet import quiet_console, quiet_libraries


def run_job(cfg: DictConfig) -> float:
    """One job: a schema chosen as an option refused, library noise filtered, Hydra's runtime read once,
    the console quiet (the full config tree only with verbose=true), then train."""
    from nin_lightning.config import to_plain_dict
    from nin_lightning.run import abandon_start, train

    job = job_context(OmegaConf.to_yaml(cfg))
    try:
        refuse_schema_choices(hydra_choices())
    except Exception as exc:
        abandon_start(None, job, exc)  # Hydra made the run dir already
        raise
    quiet_libraries()
    verbose = OmegaConf.select(cfg, "verbose", default=False) is True
    quiet_console(verbose=verbose, sweep=job.multirun)
    if verbose:
        print_config_tree(to_plain_dict(cfg))
    return train(cfg, job)
