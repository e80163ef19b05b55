"""What only the command line needs: one-line errors (errors.py), Hydra's runtime read once (hydra_job.py),
the task function (task.py), Hydra callbacks (hydra_callbacks.py), the config tree (console.py), the
library-noise filter and quiet console (quiet.py), each group's real options for --help and choice checks
(options.py), and the DDP ranks' entry point (ddp_rank.py). Nothing below imports it."""
