"""Where a job runs: its devices, the Slurm/torchrun environment and signals, the DDP ranks of a multirun job."""
