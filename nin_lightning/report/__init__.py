"""Ablation report of a sweep dir or a W&B group (`python -m nin_lightning.report`, docs/tracking.md)."""
