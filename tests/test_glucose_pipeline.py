"""The simulated cohort (simglucose → OhioT1DM XML) and the glucose pipeline end to end."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from biokd.config import load_config
from biokd.glucose.demo import QUICK, GlucoseRunConfig, run_glucose, write_glucose_report
from biokd.glucose.ohiot1dm import find_patients, read_patient_xml
from biokd.glucose.simulate import simulate_cohort, simulate_patient

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two virtual adults x 3 days; kept across runs under ``$BIOKD_TEST_CACHE`` when that is set."""
    cache = os.environ.get("BIOKD_TEST_CACHE")
    out = Path(cache) / "glucose-cohort-2x3" if cache else tmp_path_factory.mktemp("cohort")
    simulate_cohort(out, patients=2, days=3, seed=0, jobs=2)
    return out


def test_namespace_patch_keeps_cgm_identical() -> None:
    start, days = datetime(2025, 1, 1, 7), 0.08  # breakfast (07:30 with this seed) falls inside
    fast = simulate_patient("adolescent#001", days, seed=3, start=start)
    slow = simulate_patient("adolescent#001", days, seed=3, start=start, fast=False)
    assert len(fast) == round(days * 288) and (fast["bolus"] > 0).sum() == 1 and fast["carbs"].sum() == 46
    np.testing.assert_array_equal(fast["cgm"].to_numpy(), slow["cgm"].to_numpy())
    np.testing.assert_array_equal(fast["bolus"].to_numpy(), slow["bolus"].to_numpy())


def test_simulated_cohort_reads_as_ohiot1dm(tiny_cohort: Path) -> None:
    files = find_patients(tiny_cohort)
    assert sorted(files) == ["adult001", "adult002"]
    train = read_patient_xml(files["adult001"].training)
    test = read_patient_xml(files["adult001"].testing)
    assert {"glucose_level", "basal", "bolus", "meal"} <= set(train.tables)
    glucose = test.tables["glucose_level"]
    assert glucose["ts"].min() == train.tables["glucose_level"]["ts"].max() + np.timedelta64(5, "m") or (
        glucose["ts"].min() > train.tables["glucose_level"]["ts"].max()
    )
    span = glucose["ts"].max() - glucose["ts"].min()
    assert span <= np.timedelta64(1, "D") and span > np.timedelta64(20, "h")  # the last of 3 days
    assert (train.tables["glucose_level"]["value"] % 1 == 0).all()  # whole mg/dL, as the release
    report = json.loads((tiny_cohort / "cohort.json").read_text())
    assert report["settings"]["days"] == 3 and len(report["patients"]) == 2
    again = simulate_cohort(tiny_cohort, patients=2, days=3, seed=0)
    assert all(p.get("reused") for p in again["patients"])


@pytest.mark.slow
def test_distilled_gluconet_beats_persistence(tiny_cohort: Path, tmp_path: Path) -> None:
    cfg = replace(QUICK, teacher_epochs=4, student_epochs=4)
    results = run_glucose(tmp_path, cfg, cohort=tiny_cohort)
    metrics = results["metrics"]
    kd = metrics["GlucoNet distilled"]["mean_over_patients"]
    persistence = metrics["persistence"]["mean_over_patients"]
    assert kd["30min"]["rmse"] < persistence["30min"]["rmse"]
    assert kd["60min"]["rmse"] < persistence["60min"]["rmse"]
    assert persistence["30min"]["lag_min"] == 30.0  # persistence is exactly one horizon late
    assert set(metrics["teacher (GlucoseTransformer)"]["per_patient"]) == {"adult001", "adult002"}
    assert results["costs"]["GlucoNet distilled"]["parameters"] == 10_872
    for run in ("teacher", "student", "student/alone"):  # the verbs' run folders: distilled, then alone inside
        assert (tmp_path / "runs" / run / "checkpoints" / "best.pt").is_file()
        assert json.loads((tmp_path / "runs" / run / "model.json").read_text())["kwargs"]
    html = write_glucose_report(tmp_path, results, "test")
    assert html.is_file() and (tmp_path / "figures" / "forecast-trace.png").is_file()
    assert "GlucoNet distilled" in (tmp_path / "report.md").read_text()


def test_preprocess_command(tiny_cohort: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from biokd.cli import app

    args = ["--root", str(tiny_cohort), "--out", str(tmp_path), "--patients", "adult002", "--history", "24"]
    args += ["--horizons", "6", "--val-fraction", "0.2", "--set", "score_start_min=30"]
    result = CliRunner().invoke(app, ["preprocess", "ohiot1dm", *args])
    assert result.exit_code == 0, result.output
    assert "adult002: train" in result.output
    protocol = json.loads((tmp_path / "protocol.json").read_text())
    assert protocol["history"] == 24 and protocol["horizons"] == [6] and protocol["score_start_min"] == 30


def test_demo_config_loads() -> None:
    cfg = load_config(GlucoseRunConfig, ROOT / "configs" / "glucose-demo.yaml")
    assert cfg == GlucoseRunConfig()  # the file spells out the defaults of `biokd demo glucose`


@pytest.mark.slow
def test_per_patient_models_beside_the_pooled_ones(tiny_cohort: Path, tmp_path: Path) -> None:
    """``per_patient=True``: one store and one teacher/GlucoNet pair per patient, scored on that patient only."""
    import pandas as pd
    import torch

    from biokd.glucose.demo import evaluate
    from biokd.models import load_run_model

    cfg = replace(QUICK, teacher_epochs=1, student_epochs=1, per_patient=True)
    results = run_glucose(tmp_path, cfg, cohort=tiny_cohort)
    separate = results["per_patient_models"]
    assert set(separate["windows"]) == {"adult001", "adult002"}
    for pid in ("adult001", "adult002"):
        base = tmp_path / "per_patient" / pid
        manifest = pd.read_csv(base / "windows" / "manifest.csv", dtype={"subject": str})
        assert set(manifest["subject"]) == {pid}  # this patient's windows only
        assert separate["windows"][pid]["test"] == int((manifest["split"] == "test").sum()) > 0
        # The per-patient score is that patient's model on that patient's test file (not the pooled model).
        from biokd.data.reader import ShardDataset

        own = evaluate({"m": load_run_model(base / "runs" / "student")}, ShardDataset(base / "windows", "test"))
        assert separate["models"]["GlucoNet distilled"]["per_patient"][pid] == own["m"]["per_patient"][pid]
        pooled = results["metrics"]["GlucoNet distilled"]["per_patient"][pid]["30min"]["rmse"]
        assert own["m"]["per_patient"][pid]["30min"]["rmse"] != pooled
        weights = torch.load(base / "runs" / "student" / "checkpoints" / "best.pt", weights_only=True)
        assert weights  # a trained checkpoint of its own
    mean = separate["models"]["GlucoNet alone"]["mean_over_patients"]["60min"]["rmse"]
    per = [separate["models"]["GlucoNet alone"]["per_patient"][p]["60min"]["rmse"] for p in ("adult001", "adult002")]
    assert mean == pytest.approx(np.mean(per))
    write_glucose_report(tmp_path, results, "per patient")
    text = (tmp_path / "report.md").read_text()
    assert "pooled models beside one model per patient" in text and "GlucoNet distilled per-patient" in text
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert "adult002" in json.dumps(saved)
