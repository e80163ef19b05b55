"""DDP ranks 1..N-1 of a multirun job (cluster.local_ranks): `python -m nin_lightning.cli.ddp_rank --config-path
CONF --config-name train <job overrides> hydra.run.dir=<job dir> hydra.output_subdir=null`, one job in its dir."""

import hydra
from omegaconf import DictConfig

from nin_lightning.cli.errors import one_line_errors
from nin_lightning.cli.options import register_help
from nin_lightning.config import register_configs

register_configs()
register_help()  # the --help template's list of each group's real options


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> float:
    from nin_lightning.cli.task import prepare_job

    job, conf = prepare_job(cfg)  # checked before torch loads
    from nin_lightning.run import train

    return train(cfg, job, conf=conf)


if __name__ == "__main__":
    one_line_errors(main)
