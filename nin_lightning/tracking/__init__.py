"""Experiment tracking: one W&B run per job (offline without a login), continued across resumes; docs/tracking.md."""

from nin_lightning.tracking.summary import activations_per_image, code_version, model_cost
from nin_lightning.tracking.wandb_run import TolerantWandbLogger, Tracker

__all__ = ["TolerantWandbLogger", "Tracker", "activations_per_image", "code_version", "model_cost"]
