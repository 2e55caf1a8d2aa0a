"""Clinical glucose metrics on hand-computed cases, zone boundaries included."""

from __future__ import annotations

from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from biokd.glucose.clinical import forecast_report, hypoglycaemia, paired_forecast_difference, zone_table
from biokd.glucose.gluconet import Persistence
from biokd.glucose.metrics import (
    MGDL_PER_MMOL,
    PARKES_TYPE1,
    PARKES_TYPE1_SLOPES,
    PARKES_TYPE1_VERTICES,
    cgm_summary,
    clarke_fractions,
    clarke_zones,
    forecast_metrics,
    mae,
    mard,
    parkes_fractions,
    parkes_zones,
    plot_clarke,
    plot_forecast_trace,
    plot_parkes,
    rmse,
    time_lag,
    to_mgdl,
)
from biokd.metrics.bootstrap import unit_values_t_interval


def test_point_errors_by_hand() -> None:
    y, p = [100, 200, np.nan], [110, 190, 50]  # the NaN reference is not scored
    assert rmse(y, p) == pytest.approx(10.0)
    assert mae(y, p) == pytest.approx(10.0)
    assert mard(y, p) == pytest.approx(100 * (10 / 100 + 10 / 200) / 2)  # 7.5 %
    assert rmse([100, 100], [103, 96]) == pytest.approx(np.sqrt((9 + 16) / 2))


def test_mmol_per_l_is_converted() -> None:
    assert to_mgdl(1.0, "mmol/L") == pytest.approx(18.0182) == MGDL_PER_MMOL
    assert rmse([5.0, 10.0], [6.0, 9.0], units="mmol/L") == pytest.approx(18.0182)
    assert clarke_zones([5.0], [5.0 * 1.3], units="mmol/L").tolist() == ["B"]
    with pytest.raises(ValueError, match="units"):
        to_mgdl(1.0, "mg/dl ")


def test_time_lag_of_a_delayed_copy() -> None:
    t = np.arange(300)
    y = 140 + 40 * np.sin(2 * np.pi * t / 60)
    delayed = np.r_[np.full(3, np.nan), y[:-3]]  # forecast for t = reading at t - 15 min
    assert time_lag(y, delayed, 30) == {"lag_min": 15.0, "temporal_gain_min": 15.0}
    persistence = np.r_[np.full(6, np.nan), y[:-6]]
    assert time_lag(y, persistence, 30) == {"lag_min": 30.0, "temporal_gain_min": 0.0}
    assert time_lag(y, y, 30)["temporal_gain_min"] == 30.0


# (reference, prediction, zone): every rule of the copied ClarkeErrorGrid.py, on and beside its boundaries.
CLARKE_CASES = [
    (100, 100, "A"),
    (100, 120, "A"),  # pred = 1.2·ref
    (100, 80, "A"),  # pred = 0.8·ref
    (100, 121, "B"),
    (100, 79, "B"),
    (70, 70, "A"),
    (50, 70, "A"),  # both ≤ 70
    (50, 71, "D"),  # ref ≤ 175/3, 70 ≤ pred ≤ 180
    (70, 84, "A"),  # 1.2·70
    (70, 85, "D"),  # 175/3 ≤ ref ≤ 70, pred ≥ 1.2·ref
    (180, 70, "E"),  # ref ≥ 180, pred ≤ 70
    (70, 180, "E"),  # ref ≤ 70, pred ≥ 180
    (100, 210, "C"),  # pred = ref + 110
    (100, 209, "B"),
    (290, 400, "C"),
    (300, 420, "B"),  # ref > 290: upper C rule no longer applies
    (150, 28, "C"),  # pred = 1.4·ref − 182
    (150, 29, "B"),
    (240, 180, "D"),  # ref ≥ 240, 70 ≤ pred ≤ 180
    (240, 181, "B"),
    (239, 180, "B"),
    (240, 70, "E"),  # E is checked before D
    (240, 71, "D"),
    (175 / 3, 70, "A"),
    (30, 200, "E"),
]


@pytest.mark.parametrize(("ref", "pred", "zone"), CLARKE_CASES)
def test_clarke_zone(ref: float, pred: float, zone: str) -> None:
    assert clarke_zones([ref], [pred]).tolist() == [zone]


# (reference, prediction, zone): points on a Parkes line belong to the inner zone.
PARKES_CASES = [
    (100, 100, "A"),
    (30, 50, "A"),  # on the B upper line
    (30, 50.01, "B"),
    (140, 170, "A"),  # a vertex of B upper
    (140, 171, "B"),
    (50, 30, "A"),  # on the vertical start of B lower
    (50, 0, "A"),
    (51, 30, "B"),  # below B lower (30.96 at ref 51)
    (0, 60, "B"),  # on C upper
    (0, 61, "C"),
    (0, 100, "C"),  # on D upper
    (0, 101, "D"),
    (0, 150, "D"),  # on E upper
    (0, 151, "E"),
    (260, 130, "B"),  # a vertex of C lower
    (300, 130, "C"),  # below C lower (146.6), above D lower (58.3)
    (250, 40, "C"),  # a vertex of D lower
    (250, 0, "C"),  # on the vertical start of D lower
    (251, 40, "D"),  # below D lower (40.37)
    (480, 60, "D"),
    (15, 500, "E"),
]


@pytest.mark.parametrize(("ref", "pred", "zone"), PARKES_CASES)
def test_parkes_zone(ref: float, pred: float, zone: str) -> None:
    assert parkes_zones([ref], [pred]).tolist() == [zone]


PUBLISHED_PARKES_ENDS = {"B_upper": "5729.3", "B_lower": "4495.45", "C_upper": "11526.84", "C_lower": "2091.38",
                         "D_upper": "36841.67", "D_lower": "1781.67", "E_upper": "130900"}  # fmt: skip
LOWER_X0 = {name: v[0][0] for name, v in PARKES_TYPE1_VERTICES.items()}
INNER = {"B": "A", "C": "B", "D": "C", "E": "D"}  # the zone a point on line "X_..." belongs to


def test_parkes_exact_slopes_round_to_the_published_end_points() -> None:
    for name, published in PUBLISHED_PARKES_ENDS.items():
        x, y = PARKES_TYPE1_VERTICES[name][-1]
        end = y + PARKES_TYPE1_SLOPES[name] * (5000 - x)
        decimals = len(published.split(".")[1]) if "." in published else 0
        assert round(float(end), decimals) == float(published), name
        assert PARKES_TYPE1[name][-1] == (5000, pytest.approx(float(end), abs=1e-9))


def _integer_points_on_parkes_lines() -> list[tuple[int, int, str, str, bool]]:
    """Every integer (ref, pred) exactly on a Parkes line (exact rational arithmetic), its line, its inner
    zone, and whether it lies on a vertical segment."""
    points = []
    for name, vertices in PARKES_TYPE1_VERTICES.items():
        line = [(Fraction(x), Fraction(y)) for x, y in vertices]
        x, y = line[-1]
        line.append((Fraction(5000), y + PARKES_TYPE1_SLOPES[name] * (5000 - x)))
        for (xa, ya), (xb, yb) in pairwise(line):
            if xa == xb:
                points += [(int(xa), v, name, INNER[name[0]], True) for v in range(int(ya), int(yb) + 1)]
                continue
            for r in range(int(xa), int(xb) + 1):
                v = ya + (yb - ya) / (xb - xa) * (r - xa)
                if v.denominator == 1:
                    points.append((r, int(v), name, INNER[name[0]], False))
    return points


def test_parkes_points_exactly_on_a_line_belong_to_the_inner_zone() -> None:
    points = _integer_points_on_parkes_lines()
    assert len(points) > 3000
    r, p = (np.array([pt[i] for pt in points], dtype=float) for i in (0, 1))
    zones = parkes_zones(r, p)
    wrong = [(pt[:3], z) for pt, z in zip(points, zones, strict=True) if z != pt[3]]
    assert wrong == []
    # 0.01 mg/dL beyond a sloped or flat segment is already the outer zone: the tolerance moves no real point.
    # (A lower line's first sloped vertex sits on its vertical start: moving down keeps it on the line.)
    sloped = [pt for pt in points if not pt[4] and not (pt[2].endswith("lower") and pt[0] == LOWER_X0[pt[2]])]
    r = np.array([pt[0] for pt in sloped], dtype=float)
    outward = np.array([0.01 if pt[2].endswith("upper") else -0.01 for pt in sloped])
    zones = parkes_zones(r, np.array([pt[1] for pt in sloped], dtype=float) + outward)
    assert [(pt[:3], z) for pt, z in zip(sloped, zones, strict=True) if z != pt[2][0]] == []


def test_zone_fractions_and_forecast_metrics() -> None:
    ref = [100, 100, 100, 70, np.nan]
    pred = [100, 121, 210, 180, 100]
    assert clarke_fractions(ref, pred) == {"A": 0.25, "B": 0.25, "C": 0.25, "D": 0.0, "E": 0.25}
    assert parkes_fractions([100, 30], [100, 160]) == {"A": 0.5, "B": 0.0, "C": 0.0, "D": 0.0, "E": 0.5}
    m = forecast_metrics([100, 200, np.nan], [110, 190, 90])
    assert m["n"] == 2 and m["rmse"] == pytest.approx(10) and m["clarke_a"] == 1.0 and m["parkes_a"] == 1.0


def test_cgm_summary_by_hand() -> None:
    g = [50, 60, 70, 180, 181, 250, 251, 100, np.nan]
    s = cgm_summary(g)
    mean = 1142 / 8
    assert s["n"] == 8 and s["mean"] == pytest.approx(mean)
    assert s["tbr_70"] == 25.0 and s["tbr_54"] == 12.5 and s["tir"] == 37.5
    assert s["tar_180"] == 37.5 and s["tar_250"] == 12.5
    assert s["gmi"] == pytest.approx(3.31 + 0.02392 * mean)
    assert s["cv"] == pytest.approx(100 * np.std(g[:8], ddof=1) / mean)
    mmol = cgm_summary(np.array(g) / MGDL_PER_MMOL, units="mmol/L")
    assert mmol["tir"] == 37.5 and mmol["mean"] == pytest.approx(mean)


def test_plots_are_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ref = rng.uniform(40, 400, 200)
    pred = ref * rng.normal(1, 0.15, 200)
    fig = plot_clarke(ref, pred, tmp_path / "clarke.png")
    assert (tmp_path / "clarke.png").stat().st_size > 10_000
    assert "A " in fig.axes[0].get_title()
    plot_parkes(ref, pred, tmp_path / "parkes.png")
    assert (tmp_path / "parkes.png").stat().st_size > 10_000
    times = np.arange("2025-01-01T00:00", "2025-01-01T10:00", np.timedelta64(5, "m"), dtype="datetime64[m]")
    plot_forecast_trace(
        times, ref[: len(times)], {"model": pred[: len(times)]}, tmp_path / "trace.png",
        carbs=np.zeros(len(times)), insulin=np.ones(len(times)),
    )  # fmt: skip
    assert (tmp_path / "trace.png").stat().st_size > 10_000


def test_persistence_repeats_the_last_real_reading_after_a_long_gap() -> None:
    """A 60-minute gap: 30 minutes forward-filled, then the running mean (the ``cgm`` channel's fill)."""
    real = 100 + 3 * torch.arange(24.0)  # rising to 169 mg/dL
    cgm = torch.cat([real, torch.full((6,), 169.0), torch.full((6,), float(real.mean()))])
    mask = torch.cat([torch.ones(24), torch.zeros(12)])
    x = torch.zeros(3, 6, 36)
    x[:, 0], x[:, 1] = cgm, mask
    x[1, 1, -1], x[1, 0, -1] = 1.0, 150.0  # a real reading closes the gap: it is the last real one
    x[2, 1] = 0.0  # no real reading at all: the window's last value
    out = Persistence(n_outputs=2)(x)
    assert out.tolist() == [[169.0, 169.0], [150.0, 150.0], [float(real.mean())] * 2]
    assert float(real.mean()) != 169.0  # the old baseline (last value, filled or not) gave the running mean here


def _cohort(n_patients: int, per_patient: int = 200, seed: int = 0):
    """Readings (n, 2) at two horizons, two models' forecasts and the patient of each window."""
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i:02d}" for i in range(n_patients)], per_patient)
    ref = rng.uniform(45, 350, (len(patients), 2))
    noise = rng.uniform(5, 25, n_patients)[np.repeat(np.arange(n_patients), per_patient)]  # patients differ
    good = ref + rng.normal(0, 1, ref.shape) * noise[:, None] * np.array([1.0, 1.8])
    bad = ref * rng.normal(1, 0.3, ref.shape)
    ref[::37, 1] = np.nan  # unscored targets
    return ref, {"good": good, "bad": bad}, patients


def test_hypoglycaemia_by_hand() -> None:
    ref, pred = [60, 65, 100, 50, np.nan], [65, 80, 60, 55, 40]
    h = hypoglycaemia(ref, pred)
    assert h["hypo_sensitivity_frac"] == pytest.approx(2 / 3)  # (60, 65) and (50, 55) found; 65 missed
    assert h["hypo_precision_frac"] == pytest.approx(2 / 3)  # the forecast 60 for 100 is a false alarm
    assert h["n_hypo_readings"] == 3 and h["n_hypo_forecasts"] == 3 and h["n_pairs"] == 4
    assert h["clarke_D_frac"] == 0.25  # (65, 80): a low reading forecast ≥ 1.2·ref
    assert np.isnan(hypoglycaemia([100], [120])["hypo_sensitivity_frac"])


def test_forecast_report_pooled_equals_the_plain_metrics() -> None:
    ref, preds, patients = _cohort(3)
    out = forecast_report(ref, preds, [30, 60], patients, average="pairs", n_boot=50)
    order = [(r["model"], r["horizon_min"]) for r in out["rows"]]
    assert order == [("good", 30), ("good", 60), ("bad", 30), ("bad", 60)]
    row = out["rows"][1]
    t, p = ref[:, 1], preds["good"][:, 1]
    assert row["n_pairs"] == int(np.isfinite(t).sum()) == len(t) - len(t[::37])
    assert row["rmse_mgdl"] == pytest.approx(rmse(t, p)) and row["mae_mgdl"] == pytest.approx(mae(t, p))
    assert row["mard_pct"] == pytest.approx(mard(t, p))
    for grid, fractions in (("clarke", clarke_fractions(t, p)), ("parkes", parkes_fractions(t, p))):
        assert {z: row[f"{grid}_{z}_frac"] for z in "ABCDE"} == pytest.approx(fractions)
    hypo = hypoglycaemia(t, p)
    assert row["hypo_sensitivity_frac"] == pytest.approx(hypo["hypo_sensitivity_frac"])
    assert row["n_hypo_readings"] == hypo["n_hypo_readings"]
    assert all(key in out["units"] for key in row if key.endswith(("_mgdl", "_pct", "_frac")) or key == "horizon_min")


def test_forecast_report_intervals_over_few_patients_are_t_intervals_of_patient_values() -> None:
    ref, preds, patients = _cohort(6, seed=1)
    out = forecast_report(ref, preds, [30, 60], patients, n_boot=50)
    row = out["rows"][0]
    per_patient = [rmse(ref[patients == s, 0], preds["good"][patients == s, 0]) for s in sorted(set(patients))]
    assert row["rmse_mgdl"] == pytest.approx(np.mean(per_patient))  # the mean over patients, as BGLP scores
    assert row["ci"]["rmse_mgdl"] == pytest.approx(unit_values_t_interval(per_patient), abs=1e-9)
    assert row["ci_unit"] == "patient" and row["n_units"] == 6 and row["few_units"] is True
    assert row["ci_method"].startswith("jackknife-t") and "6 patients" in out["notes"][0]
    for name in ("mae_mgdl", "mard_pct", "clarke_A_frac", "parkes_D_frac", "hypo_precision_frac"):
        low, high = row["ci"][name]
        assert low <= row[name] <= high, name
    assert row["ci"]["rmse_mgdl"][1] < out["rows"][2]["ci"]["rmse_mgdl"][0]  # the good model is clearly better


def test_forecast_report_many_patients_bootstrap() -> None:
    ref, preds, patients = _cohort(25, per_patient=40, seed=2)
    out = forecast_report(ref, {"good": preds["good"]}, [30, 60], patients, n_boot=200)
    row = out["rows"][1]
    assert row["ci_method"] == "percentile cluster bootstrap" and row["n_units"] == 25 and not row["few_units"]
    assert out["notes"] == [] and row["ci"]["rmse_mgdl"][0] < row["rmse_mgdl"] < row["ci"]["rmse_mgdl"][1]
    with pytest.raises(ValueError, match="patients are needed"):
        forecast_report(ref, preds, [30, 60], None)
    with pytest.raises(ValueError, match=r"reference must be \(n, 3\)"):
        forecast_report(ref, preds, [30, 60, 90], patients)


def test_zone_table_has_every_zone_of_both_grids() -> None:
    ref, preds, patients = _cohort(4, seed=3)
    rows = zone_table(ref, preds, [30, 60], patients, average="pairs")
    assert len(rows) == 2 * 2 * 2 and {r["grid"] for r in rows} == {"clarke", "parkes"}
    for row in rows:
        assert sum(row[f"{z}_frac"] for z in "ABCDE") == pytest.approx(1.0)
    bad_60_clarke = next(r for r in rows if (r["model"], r["horizon_min"], r["grid"]) == ("bad", 60, "clarke"))
    t, p = ref[:, 1], preds["bad"][:, 1]
    assert {z: bad_60_clarke[f"{z}_frac"] for z in "ABCDE"} == pytest.approx(clarke_fractions(t, p))
    assert bad_60_clarke["D_frac"] > 0 and bad_60_clarke["n_patients"] == 4


def test_paired_forecast_difference_over_patients() -> None:
    ref, preds, patients = _cohort(6, seed=4)
    rows = paired_forecast_difference(ref, preds["good"], preds["bad"], [30, 60], patients, n_boot=50)
    assert [r["horizon_min"] for r in rows] == [30, 60]
    row = rows[1]
    scored = np.isfinite(ref[:, 1])
    per_patient = [
        rmse(ref[m, 1], preds["good"][m, 1]) - rmse(ref[m, 1], preds["bad"][m, 1])
        for m in (scored & (patients == s) for s in sorted(set(patients)))
    ]
    assert row["difference"]["rmse_mgdl"] == pytest.approx(np.mean(per_patient))
    assert row["ci"]["rmse_mgdl"] == pytest.approx(unit_values_t_interval(per_patient), abs=1e-9)
    assert row["ci"]["rmse_mgdl"][1] < 0 and row["n_units"] == 6 and row["ci_unit"] == "patient"
    with pytest.raises(ValueError, match="unknown metric"):
        paired_forecast_difference(ref, preds["good"], preds["bad"], [30, 60], patients, metrics=["auroc"])
