"""The command line's part of a job, before torch loads: Hydra's runtime read once, the config checked,
the console quiet. `train.py` (and each DDP rank, cli/ddp_rank.py) then hands the job to `run.train`."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from nin_lightning.cli.console import print_config_tree
from nin_lightning.cli.hydra_job import hydra_choices, job_context
from nin_lightning.cli.options import refuse_schema_choices
from nin_lightning.cli.quiet import quiet_before_import, quiet_console, quiet_libraries
from nin_lightning.cluster.slurm import env_rank
from nin_lightning.config import JobContext, TrainConfig, to_plain_dict, validate
from nin_lightning.rundir.closing import abandoned_if_refused, seed_of


def prepare_job(cfg: DictConfig) -> tuple[JobContext, TrainConfig]:
    """Hydra's runtime read once; the config checked before torch loads (a schema chosen as an option, every
    value's range: a refusal leaves no dir); the console quiet (the full config tree only with verbose=true);
    then torch and Lightning loaded, their noise filtered."""
    job = job_context(OmegaConf.to_yaml(cfg))
    with abandoned_if_refused(job, env_rank() == 0, seed_of(cfg)):  # Hydra made the run dir already
        refuse_schema_choices(hydra_choices())
        conf = validate(cfg)
    quiet_console(verbose=conf.verbose, sweep=job.multirun)
    if conf.verbose:
        print_config_tree(to_plain_dict(cfg))
    quiet_before_import()
    import lightning  # noqa: F401  torch and Lightning load here, once the config is known to be good

    quiet_libraries()  # after the import: Lightning adds its own console handler then, Hydra's takes over
    return job, conf
