"""biokd: distil biomedical foundation models into small models that run on wearables."""

__version__ = "0.1.0"
__all__ = ["__version__"]
