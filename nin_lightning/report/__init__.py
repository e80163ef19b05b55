"""Ablation report: a sweep dir (or a W&B group) -> a table over seeds (Markdown, CSV) and PNG plots, the
difference of each setting to a baseline, and the sweep's W&B report.

    python -m nin_lightning.report SWEEP_DIR [--baseline KEY=VALUE] [--min-effect X] [--wandb ENTITY/PROJECT
                                   [--publish]]
    python -m nin_lightning.report --wandb ENTITY/PROJECT --group NAME [--publish] [OUT_DIR]
    python -m nin_lightning.report --compare SWEEP_DIR SWEEP_DIR ... [--out DIR]

Modules: `jobs` (one record per job, read from a sweep dir), `wandb_source` (the same from W&B's
public API), `table` (group by the swept settings other than the seed; mean ± std; header, baseline),
`stats` (difference to the baseline: 95 % CI, Welch's and the paired t-test, seeds for 80 % power, still
improving), `values` (which recorded values the report may compute with), `plots`, `wandb_report` (the W&B
report's spec, and the wandb-workspaces report built from it), `cli`. docs/tracking.md.
"""

from nin_lightning.report.cli import make_report
from nin_lightning.report.jobs import Job, read_sweep_dir
from nin_lightning.report.table import Row, aggregate, group_keys, swept_keys
from nin_lightning.report.wandb_source import read_wandb_group

__all__ = ["Job", "Row", "aggregate", "group_keys", "make_report", "read_sweep_dir", "read_wandb_group", "swept_keys"]
