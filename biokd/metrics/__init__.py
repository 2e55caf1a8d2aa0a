"""Clinical metrics on scikit-learn, with per-subject values and intervals over subjects (bootstrap or jackknife-t)."""

from .bootstrap import FEW_UNITS, bootstrap_ci, percentile_interval, resample_weights, unit_values_t_interval
from .classification import SCALAR_METRICS, classification_report, paired_difference_ci

__all__ = [
    "FEW_UNITS",
    "SCALAR_METRICS",
    "bootstrap_ci",
    "classification_report",
    "paired_difference_ci",
    "percentile_interval",
    "resample_weights",
    "unit_values_t_interval",
]
