"""Small student models that run on wearables."""

from .mic import MiC

__all__ = ["MiC"]
