"""nin-lightning: Network in Network with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
