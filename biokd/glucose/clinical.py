"""Clinical tables of glucose forecasts, with intervals over patients: errors, both error grids, hypoglycaemia.

Every column carries its unit in its name (``rmse_mgdl``, ``mard_pct``, ``clarke_A_frac``, ``n_pairs``), and
:data:`COLUMN_UNITS` maps each name to its unit for a report's header. Values are in mg/dL (``units="mmol/L"``
converts the inputs). By default a value is the mean over patients of each patient's value (as the BGLP
challenge scores RMSE and MAE); ``average="pairs"`` pools the scored pairs of all patients instead.

Intervals follow :mod:`biokd.metrics.bootstrap` (the same block of keys as the classification metrics, with
``ci_unit: "patient"``): a jackknife-t interval over patients below 20 patients (``few_units`` below 10, as
with OhioT1DM's 6 or 12), else a percentile bootstrap of patients. Every statistic is a ratio of weighted sums
per patient (written here, a few lines, so that all resamples are scored at once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import sparse

from ..metrics.bootstrap import FEW_UNITS, bootstrap_ci
from .metrics import ZONES, clarke_zones, parkes_zones, to_mgdl

#: Readings below this (mg/dL) are hypoglycaemia (Battelino et al. 2019, level 1: < 70 mg/dL).
HYPO_MGDL = 70.0
GRIDS = ("clarke", "parkes")
METRICS = (
    "rmse_mgdl",
    "mae_mgdl",
    "mard_pct",
    *(f"{grid}_{zone}_frac" for grid in GRIDS for zone in ZONES),
    "hypo_sensitivity_frac",
    "hypo_precision_frac",
)
#: The unit of every column the tables give.
COLUMN_UNITS: dict[str, str] = {
    "horizon_min": "min",
    "rmse_mgdl": "mg/dL",
    "mae_mgdl": "mg/dL",
    "mard_pct": "%",
    **{f"{grid}_{zone}_frac": "fraction of pairs" for grid in GRIDS for zone in ZONES},
    "hypo_sensitivity_frac": "fraction of readings < 70 mg/dL forecast < 70 mg/dL",
    "hypo_precision_frac": "fraction of forecasts < 70 mg/dL with a reading < 70 mg/dL",
    "n_pairs": "count of scored (reading, forecast) pairs",
    "n_hypo_readings": "count of readings < 70 mg/dL",
    "n_hypo_forecasts": "count of forecasts < 70 mg/dL",
    "n_patients": "count",
}
BOUNDS = {name: (0.0, 1.0) for name in METRICS if name.endswith("_frac")} | {
    "rmse_mgdl": (0.0, np.inf),
    "mae_mgdl": (0.0, np.inf),
    "mard_pct": (0.0, np.inf),
}


class WeightedForecastStats:
    """Every metric of :data:`METRICS` for many weightings of the pairs at once (weights ``(b, n)``).

    Each metric is ``num/den`` summed per patient (RMSE: the square root of mean squared error); with
    ``average="patients"`` the patients' values are averaged, each counted as often as the weights draw it
    (patients where a metric is undefined, e.g. sensitivity without a reading below 70, are left out of its
    mean); with ``average="pairs"`` all pairs form one pool.
    """

    def __init__(
        self,
        reference: np.ndarray,
        prediction: np.ndarray,
        patients: np.ndarray | None = None,
        *,
        average: str = "patients",
        hypo_mgdl: float = HYPO_MGDL,
    ):
        if average not in ("patients", "pairs"):
            raise ValueError(f"average must be 'patients' or 'pairs'; got {average!r}")
        r, p = np.asarray(reference, dtype=np.float64), np.asarray(prediction, dtype=np.float64)
        err = p - r
        low_r, low_p = r < hypo_mgdl, p < hypo_mgdl
        ones = np.ones_like(r)
        parts: dict[str, tuple[np.ndarray, np.ndarray]] = {
            "rmse_mgdl": (err**2, ones),
            "mae_mgdl": (np.abs(err), ones),
            "mard_pct": (100 * np.abs(err) / r, ones),
        }
        for grid, zones in (("clarke", clarke_zones(r, p)), ("parkes", parkes_zones(r, p))):
            parts.update({f"{grid}_{z}_frac": ((zones == z).astype(np.float64), ones) for z in ZONES})
        parts["hypo_sensitivity_frac"] = ((low_r & low_p).astype(np.float64), low_r.astype(np.float64))
        parts["hypo_precision_frac"] = ((low_r & low_p).astype(np.float64), low_p.astype(np.float64))
        if patients is None or average == "pairs":
            codes = np.zeros(len(r), dtype=np.int64)
        else:
            _, codes = np.unique(np.asarray(patients).astype(str), return_inverse=True)
        n_groups = int(codes.max()) + 1 if len(r) else 1
        rows = np.arange(len(r))
        self.member = sparse.csr_matrix((np.ones(len(r)), (rows, codes)), shape=(len(r), n_groups))
        self.size = np.asarray(self.member.sum(axis=0)).ravel()
        self.names = list(parts)
        # Sparse (n, 2·K·P): per metric, its numerator then its denominator, each split by patient.
        columns = [col * n_groups + codes for col in range(2 * len(parts))]
        values = [v for num, den in parts.values() for v in (num, den)]
        self.design = sparse.csr_matrix(
            (np.concatenate(values), (np.tile(rows, len(values)), np.concatenate(columns))),
            shape=(len(r), 2 * len(parts) * n_groups),
        )

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        sums = np.asarray((self.design.T @ weights.T).T)  # (b, 2·K·P)
        n_groups = self.member.shape[1]
        copies = np.asarray((self.member.T @ weights.T).T) / self.size  # how often each patient is drawn (b, P)
        out = {}
        for k, name in enumerate(self.names):
            block = sums[:, 2 * k * n_groups : 2 * (k + 1) * n_groups]
            num, den = block[:, :n_groups], block[:, n_groups:]
            with np.errstate(divide="ignore", invalid="ignore"):
                value = np.where(den > 0, num / den, np.nan)
                if name == "rmse_mgdl":
                    value = np.sqrt(value)
                counted = np.where(np.isfinite(value), copies, 0.0)
                out[name] = np.nansum(np.nan_to_num(value) * counted, axis=1) / counted.sum(axis=1)
        return out


def _scored(reference: Any, prediction: Any, patients: Any, units: str) -> tuple[np.ndarray, ...]:
    r, p = to_mgdl(reference, units).ravel(), to_mgdl(prediction, units).ravel()
    if r.shape != p.shape:
        raise ValueError(f"reference and prediction differ in length: {r.shape[0]} vs {p.shape[0]}")
    g = None if patients is None else np.asarray([str(s) for s in patients])
    if g is not None and len(g) != len(r):
        raise ValueError(f"patients has {len(g)} entries for {len(r)} pairs")
    ok = np.isfinite(r) & np.isfinite(p)
    return r[ok], p[ok], (None if g is None else g[ok])


def hypoglycaemia(
    reference: Any, prediction: Any, *, hypo_mgdl: float = HYPO_MGDL, units: str = "mg/dL"
) -> dict[str, float]:
    """Detection of readings below ``hypo_mgdl`` by forecasts below it, and the share of zone D of both grids.

    Sensitivity = (reading and forecast below) / (reading below); precision = (both below) / (forecast
    below); NaN where the denominator is 0. Zone D: the forecast misses a dangerous reading (both grids).
    """
    r, p, _ = _scored(reference, prediction, None, units)
    stats = WeightedForecastStats(r, p, hypo_mgdl=hypo_mgdl)(np.ones((1, len(r))))
    return {
        "hypo_sensitivity_frac": float(stats["hypo_sensitivity_frac"][0]),
        "hypo_precision_frac": float(stats["hypo_precision_frac"][0]),
        "n_hypo_readings": int(np.sum(r < hypo_mgdl)),
        "n_hypo_forecasts": int(np.sum(p < hypo_mgdl)),
        "clarke_D_frac": float(stats["clarke_D_frac"][0]),
        "parkes_D_frac": float(stats["parkes_D_frac"][0]),
        "n_pairs": len(r),
    }


def _horizon_arrays(reference: Any, predictions: Mapping[str, Any], horizons_min: Sequence[float]):
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref[:, None] if ref.ndim == 1 else ref
    if ref.ndim != 2 or ref.shape[1] != len(horizons_min):
        wanted = f"(n, {len(horizons_min)})"
        raise ValueError(f"reference must be {wanted} for horizons {list(horizons_min)}; got {ref.shape}")
    preds = {}
    for model, values in predictions.items():
        pred = np.asarray(values, dtype=np.float64)
        preds[model] = pred[:, None] if pred.ndim == 1 else pred
        if preds[model].shape != ref.shape:
            raise ValueError(f"predictions of {model!r} are {preds[model].shape}; the reference is {ref.shape}")
    return ref, preds


def zone_table(
    reference: Any,
    predictions: Mapping[str, Any],
    horizons_min: Sequence[float],
    patients: Any = None,
    *,
    average: str = "patients",
    units: str = "mg/dL",
) -> list[dict[str, Any]]:
    """The full A–E table of the Clarke and the Parkes grid: one row per model, horizon and grid.

    ``reference`` is ``(n, H)`` (NaN: not scored), ``predictions`` maps a model to its ``(n, H)`` forecasts.
    Row keys: ``model``, ``horizon_min``, ``grid``, ``A_frac`` … ``E_frac`` (fractions of pairs, summing to
    1), ``n_pairs``, ``n_patients``, ``average``.
    """
    ref, preds = _horizon_arrays(reference, predictions, horizons_min)
    rows = []
    for model, pred in preds.items():
        for k, horizon in enumerate(horizons_min):
            r, p, g = _scored(ref[:, k], pred[:, k], patients, units)
            values = WeightedForecastStats(r, p, g, average=average)(np.ones((1, len(r))))
            for grid in GRIDS:
                row: dict[str, Any] = {"model": model, "horizon_min": float(horizon), "grid": grid}
                row.update({f"{z}_frac": float(values[f"{grid}_{z}_frac"][0]) for z in ZONES})
                row.update(n_pairs=len(r), n_patients=0 if g is None else len(set(g)), average=average)
                rows.append(row)
    return rows


def forecast_report(
    reference: Any,
    predictions: Mapping[str, Any],
    horizons_min: Sequence[float],
    patients: Any,
    *,
    average: str = "patients",
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    hypo_mgdl: float = HYPO_MGDL,
    units: str = "mg/dL",
) -> dict[str, Any]:
    """One row per model and horizon: every metric of :data:`METRICS` with its interval over patients.

    Each row holds ``model``, ``horizon_min``, the metrics, ``n_pairs``, ``n_hypo_readings``,
    ``n_hypo_forecasts`` and the interval block (``ci: {metric: [low, high]}``, ``ci_level``,
    ``ci_unit: "patient"``, ``n_units``, ``ci_method``, ``few_units``, ``n_boot``). The result adds
    ``units`` (:data:`COLUMN_UNITS`), ``average`` and ``notes`` (a warning when intervals rest on fewer than
    :data:`~biokd.metrics.bootstrap.FEW_UNITS` patients).
    """
    ref, preds = _horizon_arrays(reference, predictions, horizons_min)
    if patients is None:
        raise ValueError("patients are needed: intervals are over patients")
    rows, notes = [], []
    for model, pred in preds.items():
        for k, horizon in enumerate(horizons_min):
            r, p, g = _scored(ref[:, k], pred[:, k], patients, units)
            if len(r) == 0:
                raise ValueError(f"no scored pairs for {model!r} at {horizon} min")
            stats = WeightedForecastStats(r, p, g, average=average, hypo_mgdl=hypo_mgdl)
            point = stats(np.ones((1, len(r))))
            row: dict[str, Any] = {"model": model, "horizon_min": float(horizon)}
            row.update({m: _clean(point[m][0]) for m in METRICS})
            row.update(n_pairs=len(r), n_hypo_readings=int(np.sum(r < hypo_mgdl)))
            row["n_hypo_forecasts"] = int(np.sum(p < hypo_mgdl))
            block = bootstrap_ci(stats, len(r), g, n_boot=n_boot, ci=ci, seed=seed, unit="patient", bounds=BOUNDS)
            row.update(block)
            rows.append(row)
    few = sorted({row["n_units"] for row in rows if row["few_units"]})
    if few:
        counts = " or ".join(str(n) for n in few)
        notes.append(
            f"intervals rest on {counts} patients only (fewer than {FEW_UNITS}): {rows[0]['ci_method']}, "
            "wide by design; read them as rough"
        )
    return {"rows": rows, "units": dict(COLUMN_UNITS), "average": average, "notes": notes}


def _clean(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def paired_forecast_difference(
    reference: Any,
    prediction_a: Any,
    prediction_b: Any,
    horizons_min: Sequence[float],
    patients: Any,
    *,
    metrics: Sequence[str] = ("rmse_mgdl", "mae_mgdl", "mard_pct"),
    average: str = "patients",
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    units: str = "mg/dL",
) -> list[dict[str, Any]]:
    """Per horizon, ``metric(a) − metric(b)`` on the same pairs with its interval over patients (paired).

    For "distilled minus alone" or "student minus teacher": a negative RMSE difference favours ``a``. Pairs
    are scored where the reading and both forecasts are finite. Rows: ``horizon_min``, ``a``, ``b``,
    ``difference`` (each ``{metric: value}``), ``n_pairs`` and the interval block (``ci`` of the differences).
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    ref, preds = _horizon_arrays(reference, {"a": prediction_a, "b": prediction_b}, horizons_min)
    rows = []
    for k, horizon in enumerate(horizons_min):
        both = np.where(np.isfinite(preds["b"][:, k]), preds["a"][:, k], np.nan)
        r, p_a, g = _scored(ref[:, k], both, patients, units)
        _, p_b, _ = _scored(ref[:, k], np.where(np.isfinite(both), preds["b"][:, k], np.nan), None, units)
        stats_a = WeightedForecastStats(r, p_a, g, average=average)
        stats_b = WeightedForecastStats(r, p_b, g, average=average)

        def difference(weights: np.ndarray, sa=stats_a, sb=stats_b) -> dict[str, np.ndarray]:
            va, vb = sa(weights), sb(weights)
            return {m: va[m] - vb[m] for m in metrics}

        ones = np.ones((1, len(r)))
        va, vb = stats_a(ones), stats_b(ones)
        row: dict[str, Any] = {
            "horizon_min": float(horizon),
            "a": {m: _clean(va[m][0]) for m in metrics},
            "b": {m: _clean(vb[m][0]) for m in metrics},
            "difference": {m: _clean(va[m][0] - vb[m][0]) for m in metrics},
            "n_pairs": len(r),
        }
        row.update(bootstrap_ci(difference, len(r), g, n_boot=n_boot, ci=ci, seed=seed, unit="patient"))
        rows.append(row)
    return rows


def clinical_forecast_metrics(targets: Any, outputs: Any, subjects: Any, target: Any) -> dict[str, Any]:
    """The pipeline's glucose report extension (``biokd.registry.METRICS["glucose"]``) for one model.

    Every metric of :func:`forecast_report` with its interval over patients at each horizon, and the full
    Clarke and Parkes A–E tables; column names carry their units.
    """
    horizons = [float(h) for h in target.horizons]
    report = forecast_report(targets, {"model": outputs}, horizons, subjects, n_boot=1000)
    metric_rows = []
    for row in report["rows"]:
        cells: dict[str, Any] = {"horizon (min)": row["horizon_min"]}
        for key, unit in report["units"].items():
            if key in row and row[key] is not None and key in row.get("ci", {}):
                low, high = row["ci"][key]
                value = f"{row[key]:.3g}" + ("" if low is None else f" [{low:.3g}, {high:.3g}]")
                cells[f"{key} ({unit})"] = value
        cells["patients"] = row["n_units"]
        cells["CI method"] = row["ci_method"]
        metric_rows.append(cells)
    zones = [
        {
            "horizon (min)": r["horizon_min"],
            "grid": r["grid"],
            **{f"{z} (%)": round(100 * r[f"{z}_frac"], 2) for z in ZONES},
        }
        for r in zone_table(targets, {"model": outputs}, horizons, subjects)
    ]
    return {
        "rows": report["rows"],
        "notes": report["notes"],
        "tables": {"Clinical metrics (95% CIs over patients)": metric_rows, "Error-grid zones A–E": zones},
    }
