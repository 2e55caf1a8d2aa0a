"""Clinical glucose metrics: point errors, error grids, CGM summary metrics, and their plots.

Everything is in mg/dL; pass ``units="mmol/L"`` to convert inputs (× :data:`MGDL_PER_MMOL` = 18.0182).
Pairs whose reference or prediction is NaN are not scored (NaN is how windows mark unscored targets);
the count of scored pairs is returned as ``n`` by :func:`forecast_metrics`.

Point errors come from scikit-learn (RMSE, MAE, MAPE×100 = MARD). The error grids, the temporal gain
and the CGM summary metrics have no maintained Python implementation in this stack, so they are written
here from their published definitions (reference: ``glucose.md`` §4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import mean_absolute_error, mean_absolute_percentage_error, root_mean_squared_error

MGDL_PER_MMOL = 18.0182
ZONES = ("A", "B", "C", "D", "E")


def to_mgdl(values: Any, units: str = "mg/dL") -> np.ndarray:
    """``values`` as a float array in mg/dL (``units`` is ``"mg/dL"`` or ``"mmol/L"``)."""
    arr = np.asarray(values, dtype=float)
    if units == "mg/dL":
        return arr
    if units == "mmol/L":
        return arr * MGDL_PER_MMOL
    raise ValueError(f"units must be 'mg/dL' or 'mmol/L'; got {units!r}")


def _pairs(y_true: Any, y_pred: Any, units: str) -> tuple[np.ndarray, np.ndarray]:
    t, p = to_mgdl(y_true, units).ravel(), to_mgdl(y_pred, units).ravel()
    if t.shape != p.shape:
        raise ValueError(f"reference and prediction differ in length: {t.shape[0]} vs {p.shape[0]}")
    ok = np.isfinite(t) & np.isfinite(p)
    return t[ok], p[ok]


def rmse(y_true: Any, y_pred: Any, *, units: str = "mg/dL") -> float:
    t, p = _pairs(y_true, y_pred, units)
    return float(root_mean_squared_error(t, p)) if len(t) else float("nan")


def mae(y_true: Any, y_pred: Any, *, units: str = "mg/dL") -> float:
    t, p = _pairs(y_true, y_pred, units)
    return float(mean_absolute_error(t, p)) if len(t) else float("nan")


def mard(y_true: Any, y_pred: Any, *, units: str = "mg/dL") -> float:
    """Mean absolute relative difference, %: 100·mean(|y − ŷ| / y)."""
    t, p = _pairs(y_true, y_pred, units)
    return float(100 * mean_absolute_percentage_error(t, p)) if len(t) else float("nan")


def time_lag(y_true: Any, y_pred: Any, horizon_min: float, *, step_min: float = 5) -> dict[str, float]:
    """Delay of a forecast trace behind the truth, and the temporal gain ``horizon − delay`` (minutes).

    As GluPredKit's temporal gain: the shift s in [−horizon/step, 0] samples maximising |corr(y[t+s], ŷ[t])|
    over consecutive, time-aligned series (ŷ[t] is the forecast *for* time t); delay = −s·step. A
    forecast that repeats the last reading (persistence) has delay = horizon and gain 0.
    Written here (a few lines): no library offers a NaN-aware shifted correlation.
    """
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if t.shape != p.shape:
        raise ValueError(f"reference and prediction differ in length: {t.shape[0]} vs {p.shape[0]}")
    best_shift, best = 0, -np.inf
    for s in range(-int(horizon_min // step_min), 1):
        a, b = (t[: len(t) + s], p[-s:]) if s < 0 else (t, p)  # pairs y[i + s] with ŷ[i]
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
            continue
        c = abs(np.corrcoef(a[ok], b[ok])[0, 1])
        if c > best:
            best, best_shift = c, s
    delay = -best_shift * step_min
    return {"lag_min": float(delay), "temporal_gain_min": float(horizon_min - delay)}


# ----------------------------------------------------------------------------------------------------------
# Error grids
# ----------------------------------------------------------------------------------------------------------


def clarke_zones(reference: Any, prediction: Any, *, units: str = "mg/dL") -> np.ndarray:
    """Clarke error grid zone (``"A"``…``"E"``) of each pair.

    Variant: the rules of the widely copied ``ClarkeErrorGrid.py`` (Clarke et al., Diabetes Care
    1987;10:622–628), all inequalities non-strict, checked in the order A, E, C, D, else B:
    A: (ref ≤ 70 and pred ≤ 70) or 0.8·ref ≤ pred ≤ 1.2·ref;
    E: (ref ≥ 180 and pred ≤ 70) or (ref ≤ 70 and pred ≥ 180);
    C: (70 ≤ ref ≤ 290 and pred ≥ ref + 110) or (130 ≤ ref ≤ 180 and pred ≤ 1.4·ref − 182);
    D: (ref ≥ 240 and 70 ≤ pred ≤ 180) or (ref ≤ 175/3 and 70 ≤ pred ≤ 180) or
    (175/3 ≤ ref ≤ 70 and pred ≥ 1.2·ref).
    """
    r, p = to_mgdl(reference, units).ravel(), to_mgdl(prediction, units).ravel()
    zone_a = ((r <= 70) & (p <= 70)) | ((p >= 0.8 * r) & (p <= 1.2 * r))
    zone_e = ((r >= 180) & (p <= 70)) | ((r <= 70) & (p >= 180))
    zone_c = ((r >= 70) & (r <= 290) & (p >= r + 110)) | ((r >= 130) & (r <= 180) & (p <= 1.4 * r - 182))
    zone_d = (
        ((r >= 240) & (p >= 70) & (p <= 180))
        | ((r <= 175 / 3) & (p >= 70) & (p <= 180))
        | ((r >= 175 / 3) & (r <= 70) & (p >= 1.2 * r))
    )
    return np.select([zone_a, zone_e, zone_c, zone_d], ["A", "E", "C", "D"], default="B")


#: Parkes (consensus) error grid, type 1 diabetes: the published polyline vertices (ref, pred) in mg/dL up to
#: the last one before the extension to ref = 5000 (glucose.md §4.2).
PARKES_TYPE1_VERTICES: dict[str, list[tuple[int, int]]] = {
    "B_upper": [(0, 50), (30, 50), (140, 170), (280, 380)],
    "B_lower": [(50, 0), (50, 30), (170, 145), (385, 300)],
    "C_upper": [(0, 60), (30, 60), (50, 80), (70, 110)],
    "C_lower": [(120, 0), (120, 30), (260, 130)],
    "D_upper": [(0, 100), (25, 100), (50, 125), (80, 215)],
    "D_lower": [(250, 0), (250, 40)],
    "E_upper": [(0, 150), (35, 155)],
}
#: Exact slope of each line's last segment. The published end points at ref = 5000 (5729.3, 4495.45, 11526.84,
#: 2091.38, 36841.67, 1781.67, 130900) are these extensions rounded to two decimals (a test checks it); with
#: the rounded values, points exactly on a line fell into the outer zone.
PARKES_TYPE1_SLOPES: dict[str, Fraction] = {
    "B_upper": Fraction(17, 15),
    "B_lower": Fraction(10, 11),
    "C_upper": Fraction(44, 19),
    "C_lower": Fraction(12, 29),
    "D_upper": Fraction(67, 9),
    "D_lower": Fraction(11, 30),
    "E_upper": Fraction(79, 3),
}
PARKES_END = 5000


def _extend(vertices: list[tuple[int, int]], slope: Fraction) -> list[tuple[float, float]]:
    x, y = vertices[-1]
    return [(float(a), float(b)) for a, b in vertices] + [(PARKES_END, float(y + slope * (PARKES_END - x)))]


#: The full polylines (published vertices, extended by their exact slopes).
PARKES_TYPE1: dict[str, list[tuple[float, float]]] = {
    name: _extend(vertices, PARKES_TYPE1_SLOPES[name]) for name, vertices in PARKES_TYPE1_VERTICES.items()
}
#: A point within this distance (mg/dL) of a line is on it, so float rounding of the line cannot move it out.
ON_LINE_TOLERANCE = 1e-6


def _below_upper(r: np.ndarray, p: np.ndarray, line: Sequence[tuple[float, float]]) -> np.ndarray:
    xs, ys = np.array(line, dtype=float).T
    return p <= np.interp(r, xs, ys) + ON_LINE_TOLERANCE


def _above_lower(r: np.ndarray, p: np.ndarray, line: Sequence[tuple[float, float]]) -> np.ndarray:
    # A lower line starts with a vertical segment at x0: nothing left of x0 (or on it) is below the line.
    xs, ys = np.array(line, dtype=float).T
    return (r <= xs[0]) | (p >= np.interp(r, xs[1:], ys[1:]) - ON_LINE_TOLERANCE)


def parkes_zones(reference: Any, prediction: Any, *, units: str = "mg/dL") -> np.ndarray:
    """Parkes consensus error grid zone for type 1 diabetes (Parkes et al., Diabetes Care 2000).

    Zone X (B, C, D) begins beyond the pair of lines named X in :data:`PARKES_TYPE1`; E lies above the
    E line; below the D lower line is D. A point on a line belongs to the inner (better) zone.
    """
    r, p = to_mgdl(reference, units).ravel(), to_mgdl(prediction, units).ravel()
    lines = PARKES_TYPE1

    def inside(zone: str) -> np.ndarray:
        return _below_upper(r, p, lines[f"{zone}_upper"]) & _above_lower(r, p, lines[f"{zone}_lower"])

    zone_e = ~_below_upper(r, p, lines["E_upper"])
    return np.select([inside("B"), inside("C"), inside("D"), zone_e], ["A", "B", "C", "E"], default="D")


def zone_fractions(zones: np.ndarray) -> dict[str, float]:
    """Fraction of pairs in each zone A–E (0 for an empty input)."""
    n = len(zones)
    return {z: float(np.sum(zones == z) / n) if n else 0.0 for z in ZONES}


def clarke_fractions(reference: Any, prediction: Any, *, units: str = "mg/dL") -> dict[str, float]:
    r, p = _pairs(reference, prediction, units)
    return zone_fractions(clarke_zones(r, p))


def parkes_fractions(reference: Any, prediction: Any, *, units: str = "mg/dL") -> dict[str, float]:
    r, p = _pairs(reference, prediction, units)
    return zone_fractions(parkes_zones(r, p))


# ----------------------------------------------------------------------------------------------------------
# CGM summary metrics (Battelino et al., Diabetes Care 2019)
# ----------------------------------------------------------------------------------------------------------


def cgm_summary(glucose: Any, *, units: str = "mg/dL") -> dict[str, float]:
    """Mean, SD, CV (%), GMI (%) and time in/below/above range (%) of CGM readings (NaN skipped).

    TIR 70–180 inclusive; TBR <70 and <54; TAR >180 and >250; GMI = 3.31 + 0.02392·mean;
    CV = 100·SD/mean with the sample SD (ddof = 1).
    """
    g = to_mgdl(glucose, units).ravel()
    g = g[np.isfinite(g)]
    if len(g) == 0:
        return dict.fromkeys(("n", "mean", "sd", "cv", "gmi", "tir", "tbr_70", "tbr_54", "tar_180", "tar_250"), 0.0)
    mean = float(g.mean())
    sd = float(g.std(ddof=1)) if len(g) > 1 else 0.0
    pct = lambda mask: float(100 * mask.mean())  # noqa: E731
    return {
        "n": float(len(g)),
        "mean": mean,
        "sd": sd,
        "cv": 100 * sd / mean,
        "gmi": 3.31 + 0.02392 * mean,
        "tir": pct((g >= 70) & (g <= 180)),
        "tbr_70": pct(g < 70),
        "tbr_54": pct(g < 54),
        "tar_180": pct(g > 180),
        "tar_250": pct(g > 250),
    }


def forecast_metrics(y_true: Any, y_pred: Any, *, units: str = "mg/dL") -> dict[str, float]:
    """RMSE, MAE, MARD, Clarke A (+A+B) and Parkes A (+A+B) of one horizon's scored pairs."""
    t, p = _pairs(y_true, y_pred, units)
    clarke = zone_fractions(clarke_zones(t, p))
    parkes = zone_fractions(parkes_zones(t, p))
    return {
        "n": float(len(t)),
        "rmse": rmse(t, p),
        "mae": mae(t, p),
        "mard": mard(t, p),
        "clarke_a": clarke["A"],
        "clarke_ab": clarke["A"] + clarke["B"],
        "parkes_a": parkes["A"],
        "parkes_ab": parkes["A"] + parkes["B"],
    }


# ----------------------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg)
# ----------------------------------------------------------------------------------------------------------

_CLARKE_LINES = [
    ((0, 400), (0, 400)),
    ((0, 175 / 3), (70, 70)),
    ((175 / 3, 400 / 1.2), (70, 400)),
    ((70, 70), (84, 400)),
    ((0, 70), (180, 180)),
    ((70, 290), (180, 400)),
    ((70, 70), (0, 56)),
    ((70, 400), (56, 320)),
    ((180, 180), (0, 70)),
    ((180, 400), (70, 70)),
    ((240, 240), (70, 180)),
    ((240, 400), (180, 180)),
    ((130, 180), (0, 70)),
]
_CLARKE_LABELS = [("A", 30, 15), ("A", 370, 260), ("B", 370, 140), ("B", 280, 370), ("C", 160, 370),
                  ("C", 160, 15), ("D", 30, 140), ("D", 370, 120), ("E", 30, 370), ("E", 370, 15)]  # fmt: skip


_PARKES_LABELS = [("A", 430, 450), ("B", 300, 480), ("B", 480, 330), ("C", 150, 450), ("C", 480, 200),
                  ("D", 60, 450), ("D", 480, 60), ("E", 15, 500)]  # fmt: skip


def _figure(ax, figsize=(5.5, 5.5)):
    """A matplotlib ``Figure`` on the Agg canvas (pyplot's global state is never touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _finish(fig, path: str | Path | None):
    if path is not None:
        from .._io import atomic_path

        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=120)
    return fig


def plot_clarke(reference: Any, prediction: Any, path=None, *, units="mg/dL", title="Clarke error grid", ax=None):
    """Scatter of the pairs over the Clarke grid, zone fractions in the title; saved to ``path`` if given."""
    return _plot_grid(reference, prediction, path, units, title, ax, _CLARKE_LINES, _CLARKE_LABELS, clarke_zones, 400)


def plot_parkes(reference: Any, prediction: Any, path=None, *, units="mg/dL", title="Parkes error grid (type 1)",
                ax=None):  # fmt: skip
    """Scatter of the pairs over the Parkes type 1 grid, zone fractions in the title."""
    lines = [tuple(np.array(line).T) for line in PARKES_TYPE1.values()]
    return _plot_grid(
        reference, prediction, path, units, title, ax, lines, _PARKES_LABELS, parkes_zones, 550, identity=True
    )


def _plot_grid(reference, prediction, path, units, title, ax, lines, labels, zones, limit, identity=False):
    """The frame both error grids share: points, zone lines and labels, zone fractions in the title."""
    r, p = _pairs(reference, prediction, units)
    fig, ax = _figure(ax)
    ax.scatter(r, p, s=4, alpha=0.4, color="tab:blue", linewidths=0)
    if identity:
        ax.plot([0, limit], [0, limit], color="black", lw=0.5, ls=":")
    for xs, ys in lines:
        ax.plot(xs, ys, color="black", lw=0.8)
    for label, x, y in labels:
        ax.text(x, y, label, fontsize=12, ha="center", va="center")
    frac = zone_fractions(zones(r, p))
    ax.set(xlim=(0, limit), ylim=(0, limit), xlabel="reference (mg/dL)", ylabel="prediction (mg/dL)")
    ax.set_title(f"{title}\n" + "  ".join(f"{z} {100 * v:.1f}%" for z, v in frac.items()), fontsize=9)
    ax.set_aspect("equal")
    return _finish(fig, path)


def plot_forecast_trace(
    times: Any,
    actual: Any,
    forecasts: Mapping[str, Any],
    path=None,
    *,
    carbs: Any = None,
    insulin: Any = None,
    title: str = "forecast",
):
    """Actual CGM and forecasts (each aligned to the time it forecasts), with meals and insulin below."""
    fig, _ = _figure(None, figsize=(10, 5))
    fig.clear()
    ax, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot(times, actual, color="black", lw=1.2, label="CGM")
    for name, values in forecasts.items():
        ax.plot(times, values, lw=0.9, label=name)
    ax.axhspan(70, 180, color="green", alpha=0.06)
    ax.set(ylabel="glucose (mg/dL)", title=title)
    ax.legend(fontsize=7, ncol=3)
    if carbs is not None:
        ax2.bar(times, carbs, width=0.01, color="tab:orange", label="carbs (g)")
    if insulin is not None:
        ax2b = ax2.twinx()
        ax2b.plot(times, insulin, color="tab:purple", lw=0.8, label="insulin (U/5 min)")
        ax2b.set_ylabel("insulin (U)", fontsize=8)
    ax2.set_ylabel("carbs (g)", fontsize=8)
    for label in ax2.get_xticklabels():
        label.set_rotation(30)
    return _finish(fig, path)


class ExportCardMetrics:
    """Glucose figures for an export's model card: Clarke A and A+B of forecasts against the targets
    (``__call__``), and how many forecasts the export moved into another Clarke zone (``agreement``)."""

    units = "mg/dL"

    def __call__(self, y_true: Any, y_pred: Any) -> dict[str, float]:
        zones = zone_fractions(clarke_zones(y_true, y_pred))
        return {"clarke_a": zones["A"], "clarke_ab": zones["A"] + zones["B"]}

    def agreement(self, y_true: Any, reference: Any, exported: Any) -> dict[str, Any]:
        before, after = clarke_zones(y_true, reference), clarke_zones(y_true, exported)
        worse = np.sum(np.array([ZONES.index(z) for z in after]) > np.array([ZONES.index(z) for z in before]))
        return {
            "clarke_zone_agreement": float(np.mean(before == after)) if len(before) else 1.0,
            "forecasts_moved_to_a_worse_zone": int(worse),
            "n_forecasts": len(before),
        }
