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
report's spec, and the wandb-workspaces report built from it), `cli`, `sweep_summary` (a sweep's last
line, a Hydra callback: it imports no plotting). docs/tracking.md.
"""
