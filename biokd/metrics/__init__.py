"""Clinical metrics on scikit-learn, with per-subject values and subject-bootstrap confidence intervals."""

from .bootstrap import bootstrap_ci, percentile_interval, resample_weights
from .classification import SCALAR_METRICS, classification_report

__all__ = ["SCALAR_METRICS", "bootstrap_ci", "classification_report", "percentile_interval", "resample_weights"]
