"""Where a job runs: devices (devices.py), the Slurm/torchrun environment and its signals (slurm.py), and
the DDP ranks of a multirun job (local_ranks.py). The rank entry point is nin_lightning/cli/ddp_rank.py."""
