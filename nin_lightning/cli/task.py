"""The task function behind `python train.py` and the DDP ranks' entry point: Hydra's job -> `run.train`."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from nin_lightning.cli.console import print_config_tree
from nin_lightning.cli.hydra_job import hydra_choices, job_context
from nin_lightning.cli.options import refuse_schema_choices
from nin_lightning.cli.quiet import quiet_console, quiet_libraries
from nin_lightning.cluster.slurm import env_rank
from nin_lightning.config import to_plain_dict, validate
from nin_lightning.rundir.closing import abandon_start, seed_of


def run_job(cfg: DictConfig) -> float:
    """One job: the config checked before torch loads (a schema chosen as an option, every value's range),
    library noise filtered, Hydra's runtime read once, the console quiet (the full config tree only with
    verbose=true), then train."""
    job = job_context(OmegaConf.to_yaml(cfg))
    try:
        refuse_schema_choices(hydra_choices())
        conf = validate(cfg)
    except Exception as exc:
        abandon_start(None, job, exc, env_rank() == 0, seed_of(cfg))  # Hydra made the run dir already
        raise
    quiet_libraries()
    verbose = OmegaConf.select(cfg, "verbose", default=False) is True
    quiet_console(verbose=verbose, sweep=job.multirun)
    if verbose:
        print_config_tree(to_plain_dict(cfg))
    from nin_lightning.run import train  # torch and Lightning load here, once the config is known to be good

    return train(cfg, job, conf=conf)
