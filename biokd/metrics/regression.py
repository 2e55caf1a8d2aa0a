"""Forecast error metrics per horizon (RMSE, MAE) with unit-bootstrap confidence intervals.

Targets may hold NaN (not scored); they are left out of every value. Units are the clusters of the
bootstrap (patients, subjects): each drawn unit brings all its items.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .bootstrap import bootstrap_ci


class _ErrorStats:
    """Weighted RMSE and MAE of each horizon, for a batch of bootstrap weights ``(b, n)``."""

    def __init__(self, err: np.ndarray, labels: Sequence[str]):
        self.ok = np.isfinite(err)
        self.sq = np.where(self.ok, err, 0.0) ** 2
        self.ab = np.sqrt(self.sq)
        self.labels = labels

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        w = np.atleast_2d(weights)
        for k, label in enumerate(self.labels):
            denom = w @ self.ok[:, k]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"rmse_{label}"] = np.sqrt((w @ self.sq[:, k]) / denom)
                out[f"mae_{label}"] = (w @ self.ab[:, k]) / denom
        with np.errstate(invalid="ignore", divide="ignore"):
            out["rmse"] = np.mean([out[f"rmse_{lab}"] for lab in self.labels], axis=0)
            out["mae"] = (w @ self.ab.sum(1)) / (w @ self.ok.sum(1))
        return out


def regression_report(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    units: Sequence[Any] | None,
    labels: Sequence[str],
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """RMSE and MAE per horizon (and their means), per unit, with unit-bootstrap CIs."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(f"targets {y_true.shape} and forecasts {y_pred.shape} must be equal (n, H) arrays")
    stats = _ErrorStats(y_pred - y_true, labels)
    point = {k: float(v[0]) for k, v in stats(np.ones((1, len(y_true)))).items()}
    out: dict[str, Any] = {"n": len(y_true), "horizons": list(labels), **point}
    if units is not None:
        u = np.asarray([str(s) for s in units])
        out["per_subject"] = {
            s: {k: float(v[0]) for k, v in stats((u == s)[None].astype(float)).items()} for s in sorted(set(u))
        }
    if n_boot > 0:
        boot = bootstrap_ci(stats, len(y_true), None if units is None else list(units), n_boot=n_boot, ci=ci, seed=seed)
        out["ci"] = boot["ci"]
        out["ci_level"] = ci
        out["ci_unit"] = "subject" if units is not None else "sample"
        out["n_units"] = boot["n_units"]
        out["n_boot"] = n_boot
    return out
