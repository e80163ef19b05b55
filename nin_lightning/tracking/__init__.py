"""Experiment tracking: one W&B run per job (offline without a login), continued across resumes.

    wandb_run.py      the Tracker: the run's identity (a W&B agent's ids, a resumed run's), init, finish
    wandb_env.py      W&B's own rules: its server, a login, and project/entity/job type/name/tags from the
                      config, WANDB_* variables and this project's defaults
    run_config.py     the W&B run's config: Hydra's choices, only keys that change the result
    artifacts.py      checkpoints as W&B model artifacts (logger.log_model)
    axes.py           define_metric: epoch metrics against `epoch`, step metrics against `trainer/global_step`
    summary.py        what the run's summary and metrics.json (from the start on) say about the run (SUMMARY_KEYS)
    code_version.py   the git commit and dirty flag of the code that ran
    cost.py           the model's parameters and multiply-accumulates per image
    osh.py            wandb-osh: ask a login node to `wandb sync` an offline run after each epoch
"""

from nin_lightning.tracking.code_version import code_version
from nin_lightning.tracking.cost import activations_per_image, model_cost
from nin_lightning.tracking.summary import SUMMARY_KEYS, run_summary
from nin_lightning.tracking.wandb_env import wandb_mode
from nin_lightning.tracking.wandb_run import TolerantWandbLogger, Tracker, agent_run

__all__ = ["SUMMARY_KEYS", "TolerantWandbLogger", "Tracker", "activations_per_image", "agent_run", "code_version",
           "model_cost", "run_summary", "wandb_mode"]
