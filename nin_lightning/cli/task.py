"""The task function behind `python train.py` and the DDP ranks' entry point: Hydra's job -> `run.train`."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from nin_lightning.cli.console import print_config_tree
from nin_lightning.cli.hydra_job import job_context
from nin_lightning.cli.quiet import quiet_libraries


def run_job(cfg: DictConfig) -> float:
    """One job: library noise filtered, the composed config shown, Hydra's runtime read once, then train."""
    from nin_lightning.config import to_plain_dict
    from nin_lightning.run import train

    quiet_libraries()
    job = job_context(OmegaConf.to_yaml(cfg))
    print_config_tree(to_plain_dict(cfg))
    return train(cfg, job)
