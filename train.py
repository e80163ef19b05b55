"""Train NiN: `python train.py dataset=cifar100 model.dropout=0.3` (see README.md)."""

import os
import sys
from pathlib import Path

try:
    import hydra
    from omegaconf import DictConfig
except ModuleNotFoundError as missing:  # a shell where the venv that `make train` made is not active
    venv = Path(__file__).resolve().parent / ".venv"
    if (venv / "bin" / "python").is_file() and Path(sys.prefix).resolve() != venv.resolve():
        os.execv(venv / "bin" / "python", [str(venv / "bin" / "python"), *sys.argv])  # the same command, in .venv
    sys.exit(f"error: {missing.name} is not installed for {sys.executable}; run `make train` once (it makes .venv "
             "and installs everything), then `source .venv/bin/activate`, or run .venv/bin/python train.py ...")

from nin_lightning.cli.errors import one_line_errors
from nin_lightning.cli.options import register_help
from nin_lightning.config import register_configs

register_configs()
register_help()  # the --help template's list of each group's real options


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point: one job. Returns the metric that a sweeper maximises (val/acc_best)."""
    from nin_lightning.cli.task import prepare_job

    job, conf = prepare_job(cfg)  # checked before torch loads
    from nin_lightning.run import train

    return train(cfg, job, conf=conf)


if __name__ == "__main__":
    one_line_errors(main)
