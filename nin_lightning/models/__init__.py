"""Network architectures."""

from nin_lightning.models.nin import NiN

__all__ = ["NiN"]
