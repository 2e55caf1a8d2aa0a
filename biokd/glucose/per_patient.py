"""Per-patient OhioT1DM models (the BGLP challenge protocol): the same verbs once per patient.

Each patient gets a store of their own windows (``preprocess_ohiot1dm(..., patients=[id])``), a
``train-teacher`` run and a ``distill`` run (GlucoNet distilled, and alone), under ``out/per_patient/<id>/``.
Each model is scored on its own patient's test file; :func:`side_by_side` sets those scores beside the pooled
model's scores of the same patient.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..data.reader import ShardDataset
from ..models import load_run_model
from ..pipeline import distill, train_teacher
from .ohiot1dm import OhioProtocol, find_patients, preprocess_ohiot1dm

#: The learned models trained both ways (pooled and per patient), by their name in the demo's metrics.
LEARNED = ("teacher (GlucoseTransformer)", "GlucoNet distilled", "GlucoNet alone")


def run_per_patient(out: str | Path, cfg: Any, cohort: str | Path, protocol: OhioProtocol) -> dict[str, Any]:
    """Train and score one teacher and one GlucoNet pair per patient of ``cohort`` (a ``GlucoseRunConfig``)."""
    from .demo import _mean, evaluate, run_configs

    out = Path(out)
    per_patient: dict[str, dict[str, Any]] = {name: {} for name in LEARNED}
    windows: dict[str, dict[str, int]] = {}
    for pid in sorted(find_patients(cohort)):
        base = out / "per_patient" / pid
        preprocess_ohiot1dm(cohort, base / "windows", protocol, patients=[pid])
        teacher_cfg, student_cfg = run_configs(cfg, base / "windows", base / "runs" / "teacher")
        train_teacher(teacher_cfg, base / "runs" / "teacher", restart=True)
        distill(student_cfg, base / "runs" / "student", restart=True)
        test = ShardDataset(base / "windows", "test")
        runs = {"teacher (GlucoseTransformer)": "teacher", "GlucoNet distilled": "student"}
        models = {name: load_run_model(base / "runs" / run) for name, run in runs.items()}
        models["GlucoNet alone"] = load_run_model(base / "runs" / "student" / "alone")
        scores = evaluate(models, test)
        for name in LEARNED:
            per_patient[name][pid] = scores[name]["per_patient"][pid]
        windows[pid] = {s: len(ShardDataset(base / "windows", s)) for s in ("train", "val", "test")}
    return {
        "models": {
            name: {"per_patient": rows, "mean_over_patients": _mean(rows, list(rows))}
            for name, rows in per_patient.items()
        },
        "windows": windows,
    }


def side_by_side(pooled: Mapping[str, Any], separate: Mapping[str, Any], horizon: str) -> list[dict[str, Any]]:
    """Rows of RMSE at ``horizon`` per patient (and their mean): each learned model pooled and per patient."""
    patients = list(next(iter(separate["models"].values()))["per_patient"])
    rows = []
    for pid in [*patients, "mean"]:
        row: dict[str, Any] = {"patient": pid}
        for name in LEARNED:
            for kind, source in (("pooled", pooled[name]), ("per-patient", separate["models"][name])):
                m = source["mean_over_patients"] if pid == "mean" else source["per_patient"][pid]
                row[f"{name} {kind}"] = round(m[horizon]["rmse"], 2)
        rows.append(row)
    return rows
