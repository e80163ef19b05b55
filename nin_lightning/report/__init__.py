"""Ablation report: a sweep dir (or a W&B group) -> a table over seeds (Markdown, CSV) and PNG plots.

    python -m nin_lightning.report SWEEP_DIR
    python -m nin_lightning.report --wandb ENTITY/PROJECT --group NAME [OUT_DIR]

Modules: `jobs` (one record per job, read from a sweep dir), `wandb_source` (the same from W&B's
public API), `table` (group by the swept settings other than the seed; mean ± std), `plots`, `cli`.
"""

from nin_lightning.report.cli import make_report
from nin_lightning.report.jobs import Job, read_sweep_dir
from nin_lightning.report.table import Row, aggregate, group_keys, swept_keys
from nin_lightning.report.wandb_source import read_wandb_group

__all__ = ["Job", "Row", "aggregate", "group_keys", "make_report", "read_sweep_dir", "read_wandb_group", "swept_keys"]
