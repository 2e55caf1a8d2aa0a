"""The glucose demo over the same verbs as every dataset: simulate a cohort, preprocess it with the OhioT1DM
loader, ``train-teacher`` (GlucoseTransformer), ``distill`` (GlucoNet, beside GlucoNet trained alone), then
score everything against persistence and linear extrapolation at 30 and 60 minutes, per patient.

Splits follow the OhioT1DM challenge per patient: the training file trains (its last ``val_fraction`` by time
validates and picks the best epoch), the testing file tests, scored from 60 minutes in. One model is trained
for all patients. Metrics are computed per patient and averaged over patients, as the challenge does.

Layout of ``out``::

    cohort/           simulated OhioT1DM XML (reused when the settings match)
    windows/          the preprocessed store (reused per patient when protocol and files match)
    runs/teacher/     a ``biokd train-teacher`` run folder
    runs/student/     a ``biokd distill`` run folder (``alone/`` inside: GlucoNet trained alone)
    report.md, report.html, metrics.json, figures/
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..data.reader import ShardDataset
from ..distill.terms import Feature, OutputMatch, TaskLoss, Term
from ..models import load_run_model
from ..pipeline import DataConfig, DistillConfig, ModelConfig, RunConfig, distill, train_teacher
from ..trainer import TrainConfig, model_device
from .gluconet import LinearExtrapolation, Persistence
from .metrics import forecast_metrics, time_lag
from .ohiot1dm import SIGNAL_KEY, STEP_MIN, OhioProtocol, grid_of, preprocess_ohiot1dm
from .simulate import simulate_cohort

log = logging.getLogger("biokd")


@dataclass
class GlucoseRunConfig:
    """Sizes and settings of a glucose run (the demo's defaults finish in a few minutes on 2 CPU cores)."""

    patients: int = 4
    days: float = 7
    seed: int = 0
    jobs: int = 2
    gaps_per_day: float = 0.3
    val_fraction: float = 0.2
    teacher_epochs: int = 12
    student_epochs: int = 16
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.01
    teacher: dict[str, Any] = field(default_factory=lambda: {"d_model": 64, "n_layers": 2, "dim_feedforward": 128})
    student: dict[str, Any] = field(default_factory=dict)
    #: Distillation: weights of the output-matching and feature terms (the task MSE weighs 1).
    kd_output_weight: float = 1.0
    kd_temperature: float = 1.0
    kd_feature_weight: float = 100.0
    #: torch CPU threads during the run (restored after). Small models train fastest on one thread, and
    #: far faster than on two when other processes share the cores.
    threads: int | None = 1
    #: Also train one teacher and one GlucoNet pair per patient (the challenge protocol) and report them beside
    #: the pooled models (:mod:`biokd.glucose.per_patient`).
    per_patient: bool = False


QUICK = GlucoseRunConfig(patients=2, days=3, teacher_epochs=2, student_epochs=2)


def _terms(cfg: GlucoseRunConfig) -> list[Term]:
    terms: list[Term] = [TaskLoss("task")]
    if cfg.kd_output_weight:
        terms.append(OutputMatch("output", weight=cfg.kd_output_weight, temperature=cfg.kd_temperature))
    if cfg.kd_feature_weight:
        terms.append(Feature("feature", weight=cfg.kd_feature_weight, teacher=["feature"], student="high_feature"))
    return terms


def run_configs(cfg: GlucoseRunConfig, root: Path, teacher_run: Path) -> tuple[RunConfig, RunConfig]:
    """The ``train-teacher`` and ``distill`` configs of the demo (as in configs/glucose-*.yaml)."""

    def train(epochs: int) -> TrainConfig:
        return TrainConfig(
            epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed,
            amp=False, select_metric="rmse", split_by="time", progress=False,
        )  # fmt: skip

    data = DataConfig(root=str(root))
    notes = [NOTE_GENERATED]
    teacher = RunConfig(
        data=data,
        teacher=ModelConfig(name="glucose_transformer", kwargs=dict(cfg.teacher)),
        train=train(cfg.teacher_epochs),
        label_smoothing=0.0,
        notes=notes,
    )
    student = RunConfig(
        data=data,
        teacher=ModelConfig(run=str(teacher_run)),
        student=ModelConfig(name="gluconet", kwargs=dict(cfg.student)),
        distill=DistillConfig(terms=_terms(cfg)),
        train=train(cfg.student_epochs),
        label_smoothing=0.0,
        notes=notes,
    )
    return teacher, student


NOTE_GENERATED = "The cohort was SIMULATED (simglucose UVA/Padova); the numbers show that the pipeline works."


def test_arrays(test: ShardDataset) -> tuple[torch.Tensor, np.ndarray]:
    """Inputs ``(n, 6, T)`` and targets ``(n, H)`` of a split, in manifest order."""
    inputs = torch.stack([test[i][SIGNAL_KEY] for i in range(len(test))]) if len(test) else torch.zeros(0)
    return inputs, test.targets()


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Forecasts ``(n, H)`` of ``model`` for ``inputs`` ``(n, 6, T)``, in mg/dL, on the model's own device."""
    model.eval()
    device = model_device(model)
    parts = [model(inputs[i : i + batch_size].to(device)).cpu() for i in range(0, len(inputs), batch_size)]
    return torch.cat(parts).numpy()


def evaluate(models: Mapping[str, nn.Module], test: ShardDataset) -> dict[str, Any]:
    """Per-patient metrics at each horizon (RMSE, MAE, MARD, Clarke/Parkes A, time lag) and their means."""
    horizons = [int(h) for h in test.spec.target.horizons]
    inputs, target = test_arrays(test)
    subjects = np.array(test.subject_per_item)
    origin = pd.to_datetime(test.manifest["origin"]).to_numpy()
    release = dict(zip(test.manifest["subject"].astype(str), test.manifest["release"].astype(str), strict=True))
    out: dict[str, Any] = {}
    for name, model in models.items():
        pred = predict(model, inputs)
        per_patient: dict[str, dict[str, dict[str, float]]] = {}
        for subject in sorted(set(subjects)):
            rows = subjects == subject
            per_patient[subject] = {}
            for k, h in enumerate(horizons):
                m = forecast_metrics(target[rows, k], pred[rows, k])
                # Time lag on the trace aligned to target times (a regular 5-minute index, gaps as NaN).
                index = pd.DatetimeIndex(origin[rows]) + pd.Timedelta(minutes=h)
                full = pd.date_range(index.min(), index.max(), freq=f"{STEP_MIN}min")
                y = pd.Series(target[rows, k], index=index).reindex(full).to_numpy()
                p = pd.Series(pred[rows, k], index=index).reindex(full).to_numpy()
                m.update(time_lag(y, p, h))
                per_patient[subject][f"{h}min"] = m
        out[name] = {"mean_over_patients": _mean(per_patient, list(per_patient)), "per_patient": per_patient}
        bglp = [s for s in per_patient if release.get(s) == "2020"]
        if bglp:  # the challenge's score: the mean over the 2020 release's patients
            out[name]["mean_over_2020"] = _mean(per_patient, bglp)
    return out


def _mean(per_patient: Mapping[str, Mapping[str, Mapping[str, float]]], subjects: list[str]) -> dict[str, Any]:
    first = per_patient[subjects[0]]
    return {h: {key: float(np.mean([per_patient[s][h][key] for s in subjects])) for key in first[h]} for h in first}


def cpu_latency_ms(model: nn.Module, n_times: int = 36, repeats: int = 50) -> float:
    """Median CPU time of one forward pass on one window, in milliseconds."""
    x = torch.full((1, 6, n_times), 120.0)
    x[:, 1] = 1.0
    times = []
    with torch.no_grad():
        model.eval()
        for _ in range(5):
            model(x)
        for _ in range(repeats):
            tic = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - tic)
    return float(1000 * np.median(times))


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_glucose(out: str | Path, cfg: GlucoseRunConfig, cohort: str | Path | None = None) -> dict[str, Any]:
    """Simulate (or reuse ``cohort``), preprocess, train teacher and students, evaluate; returns results."""
    previous_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_glucose(Path(out), cfg, cohort)
    finally:
        torch.set_num_threads(previous_threads)


def _run_glucose(out: Path, cfg: GlucoseRunConfig, cohort: str | Path | None) -> dict[str, Any]:
    timings: dict[str, float] = {}
    tic = time.perf_counter()
    cohort_dir = Path(cohort) if cohort is not None else out / "cohort"
    sim = None
    if cohort is None:
        sim = simulate_cohort(
            cohort_dir, cfg.patients, cfg.days, cfg.seed, jobs=cfg.jobs, gaps_per_day=cfg.gaps_per_day
        )
        log.info(f"cohort: {len(sim['patients'])} patients x {cfg.days} days in {cohort_dir}")
    timings["simulate_s"] = time.perf_counter() - tic
    prep = preprocess_ohiot1dm(cohort_dir, out / "windows", OhioProtocol(val_fraction=cfg.val_fraction))
    timings["preprocess_s"] = time.perf_counter() - tic - timings["simulate_s"]
    runs = out / "runs"
    teacher_cfg, student_cfg = run_configs(cfg, out / "windows", runs / "teacher")

    t0 = time.perf_counter()
    train_teacher(teacher_cfg, runs / "teacher", restart=True)
    timings["teacher_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    distill(student_cfg, runs / "student", restart=True)
    timings["students_s"] = time.perf_counter() - t0

    test = ShardDataset(out / "windows", "test")
    horizons = list(OhioProtocol(val_fraction=cfg.val_fraction).horizons)
    models: dict[str, nn.Module] = {
        "persistence": Persistence(len(horizons)),
        "linear extrapolation": LinearExtrapolation(horizons),
        "teacher (GlucoseTransformer)": load_run_model(runs / "teacher"),
        "GlucoNet distilled": load_run_model(runs / "student"),
        "GlucoNet alone": load_run_model(runs / "student" / "alone"),
    }
    t0 = time.perf_counter()
    metrics = evaluate(models, test)
    timings["evaluate_s"] = time.perf_counter() - t0
    costs = {
        name: {"parameters": n_parameters(m), "cpu_ms_per_window": cpu_latency_ms(m)} for name, m in models.items()
    }
    separate = None
    if cfg.per_patient:
        from .per_patient import run_per_patient

        t0 = time.perf_counter()
        separate = run_per_patient(out, cfg, cohort_dir, OhioProtocol(val_fraction=cfg.val_fraction))
        timings["per_patient_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - tic
    windows = {s: len(ShardDataset(out / "windows", s)) for s in ("train", "val", "test")}
    return {
        "config": asdict(cfg),
        "cohort": sim,
        "preprocess": {k: prep[k] for k in ("n_windows", "processed", "reused", "skipped", "events_skipped")},
        "windows": windows,
        "metrics": metrics,
        "per_patient_models": separate,
        "costs": costs,
        "timings": timings,
        "models": models,
        "test": test,
        "root": out / "windows",
    }


def _rows(results: Mapping[str, Any], key: str = "mean_over_patients") -> list[dict[str, Any]]:
    rows = []
    for name, result in results["metrics"].items():
        row: dict[str, Any] = {"model": name}
        for h, m in result[key].items():
            row[f"RMSE {h}"] = round(m["rmse"], 2)
            row[f"MAE {h}"] = round(m["mae"], 2)
            row[f"MARD {h} %"] = round(m["mard"], 2)
            row[f"Clarke A {h} %"] = round(100 * m["clarke_a"], 1)
            row[f"Parkes A {h} %"] = round(100 * m["parkes_a"], 1)
            row[f"lag {h} (min)"] = round(m["lag_min"], 1)
        row["parameters"] = results["costs"][name]["parameters"]
        row["CPU ms / window"] = round(results["costs"][name]["cpu_ms_per_window"], 3)
        rows.append(row)
    return rows


def _per_patient_rows(results: Mapping[str, Any], horizon: str) -> list[dict[str, Any]]:
    rows = []
    metrics = results["metrics"]
    for subject in next(iter(metrics.values()))["per_patient"]:
        row: dict[str, Any] = {"patient": subject}
        for name, result in metrics.items():
            row[f"{name} RMSE"] = round(result["per_patient"][subject][horizon]["rmse"], 2)
        rows.append(row)
    return rows


def _with_ci(value: float | None, ci: Any, fmt: str = ".3g") -> str:
    """``"12.5 [11.9, 13.2]"`` (``"n/a"`` for an undefined value, no bracket without an interval)."""
    if value is None:
        return "n/a"
    low, high = ci or (None, None)
    return f"{value:{fmt}}" if low is None else f"{value:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def clinical_tables(
    models: Mapping[str, nn.Module], inputs: torch.Tensor, target: np.ndarray, test: ShardDataset
) -> dict[str, list[dict[str, Any]]]:
    """Every model's clinical metrics with intervals over patients, the full A–E zones of both grids and
    hypoglycaemia detection at each horizon, and the paired "distilled minus alone" differences."""
    from .clinical import COLUMN_UNITS, forecast_report, paired_forecast_difference, zone_table

    horizons = [float(h) for h in test.spec.target.horizons]
    patients = test.subject_per_item
    preds = {name: predict(model, inputs) for name, model in models.items()}
    report = forecast_report(target, preds, horizons, patients, n_boot=1000)
    shown = ("rmse_mgdl", "mae_mgdl", "mard_pct", "hypo_sensitivity_frac", "hypo_precision_frac", "clarke_D_frac")
    metric_rows = []
    for row in report["rows"]:
        cells: dict[str, Any] = {"model": row["model"], "horizon (min)": row["horizon_min"]}
        for key in shown:
            cells[f"{key} ({COLUMN_UNITS.get(key, '')})"] = _with_ci(row.get(key), (row.get("ci") or {}).get(key))
        cells["readings < 70 mg/dL"] = row["n_hypo_readings"]
        cells["patients"] = row["n_units"]
        metric_rows.append(cells)
    zones = [
        {"model": r["model"], "horizon (min)": r["horizon_min"], "grid": r["grid"],
         **{f"{z} (%)": round(100 * r[f"{z}_frac"], 2) for z in "ABCDE"}}
        for r in zone_table(target, preds, horizons, patients)
    ]  # fmt: skip
    tables = {
        f"Clinical metrics, 95% CIs over {metric_rows[0]['patients']} patients ({report['rows'][0]['ci_method']})": (
            metric_rows
        ),
        "Error-grid zones A–E (% of scored forecasts)": zones,
    }
    if "GlucoNet distilled" in preds and "GlucoNet alone" in preds:
        a_, b_ = preds["GlucoNet distilled"], preds["GlucoNet alone"]
        rows = []
        for row in paired_forecast_difference(target, a_, b_, horizons, patients):
            cells: dict[str, Any] = {"horizon (min)": row["horizon_min"]}
            for key, value in row["difference"].items():
                low, high = row["ci"].get(key) or (None, None)
                text = "n/a" if value is None else f"{value:+.3g}"
                cells[f"{key} ({COLUMN_UNITS.get(key, '')})"] = (
                    text if low is None else f"{text} [{low:+.3g}, {high:+.3g}]"
                )
            cells["patients"] = row["n_units"]
            rows.append(cells)
        tables["GlucoNet distilled − GlucoNet alone (paired over patients; negative favours distilled)"] = rows
    return tables


def write_glucose_report(out: str | Path, results: Mapping[str, Any], title: str) -> Path:
    """Write ``report.{md,html}``, ``metrics.json`` and figures into ``out``; returns the HTML path."""
    from ..report import Report
    from .metrics import plot_clarke, plot_parkes

    out = Path(out)
    report = Report(title)
    report.add_note(NOTE_GENERATED)
    report.add_note(
        "Protocol: OhioT1DM challenge rules (targets never interpolated, scoring from 60 min into each test "
        "file, per-patient metrics averaged over patients); "
        + (
            "models pooled over all patients and, beside them, one model per patient (the challenge's protocol)."
            if results.get("per_patient_models")
            else "one model for all patients."
        )
    )
    report.add_table("Test set, mean over patients", _rows(results))
    if all("mean_over_2020" in r for r in results["metrics"].values()):
        report.add_table(
            "Test set, mean over the 2020 patients (the challenge's score)", _rows(results, "mean_over_2020")
        )
    horizons = list(next(iter(results["metrics"].values()))["mean_over_patients"])
    for h in horizons:
        report.add_table(f"Per-patient RMSE at {h} (mg/dL)", _per_patient_rows(results, h))
    if results.get("per_patient_models"):
        from .per_patient import side_by_side

        for h in horizons:
            rows = side_by_side(results["metrics"], results["per_patient_models"], h)
            report.add_table(f"RMSE at {h} (mg/dL): pooled models beside one model per patient", rows)
    models, test = results["models"], results["test"]
    inputs, target = test_arrays(test)
    for table, rows in clinical_tables(models, inputs, target, test).items():
        report.add_table(table, rows)
    kd = predict(models["GlucoNet distilled"], inputs)
    report.add_figure("Clarke grid, GlucoNet distilled, 30 min", plot_clarke(target[:, 0], kd[:, 0]))
    report.add_figure("Parkes grid, GlucoNet distilled, 30 min", plot_parkes(target[:, 0], kd[:, 0]))
    report.add_figure("Forecast trace", _trace_figure(results["root"], test, models))
    report.add_text(
        "\n".join(f"- {k}: {v:.1f} s" for k, v in results["timings"].items()), heading="Timings (this machine)"
    )
    keys = ("config", "windows", "metrics", "per_patient_models", "costs", "timings")
    report.add_json("results", {k: results.get(k) for k in keys})
    report.add_json("preprocess", results["preprocess"])
    return report.write(out)["html"]


def _trace_figure(root: Path, test: ShardDataset, models: Mapping[str, nn.Module]):
    """The first test day of the first patient: CGM, 30-min forecasts of each model, meals and insulin."""
    from .metrics import plot_forecast_trace

    subject = test.subjects[0]
    rows = np.flatnonzero(np.array(test.subject_per_item) == subject)[: 24 * 60 // STEP_MIN]
    h = int(test.spec.target.horizons[0])
    when = pd.to_datetime(test.manifest["origin"].to_numpy()[rows]) + pd.Timedelta(minutes=h)
    grid = grid_of(root, subject).reindex(when)
    inputs = torch.stack([test[int(i)][SIGNAL_KEY] for i in rows])
    forecasts = {
        name: predict(models[name], inputs)[:, 0]
        for name in ("persistence", "teacher (GlucoseTransformer)", "GlucoNet distilled", "GlucoNet alone")
    }
    return plot_forecast_trace(
        when,
        grid["cgm_raw"].to_numpy(),
        forecasts,
        carbs=grid["carbs"].to_numpy(),
        insulin=grid["insulin"].to_numpy(),
        title=f"patient {subject}: {h}-minute forecasts (test file)",
    )


def run_glucose_demo(
    out: str | Path,
    patients: int | None = None,
    days: float | None = None,
    epochs: int | None = None,
    seed: int = 0,
    *,
    quick: bool = False,
    jobs: int = 2,
    config: GlucoseRunConfig | None = None,
) -> Path:
    """The glucose demo (``biokd demo glucose``): returns the path of ``out/report.html``.

    ``quick`` runs a seconds-long smoke version; ``patients``, ``days`` and ``epochs`` (teacher and
    students alike) override the chosen size.
    """
    cfg = config or (QUICK if quick else GlucoseRunConfig())
    changes: dict[str, Any] = {"seed": seed, "jobs": jobs}
    if patients is not None:
        changes["patients"] = patients
    if days is not None:
        changes["days"] = days
    if epochs is not None:
        changes["teacher_epochs"] = changes["student_epochs"] = epochs
    cfg = replace(cfg, **changes)
    results = run_glucose(out, cfg)
    return write_glucose_report(out, results, "Glucose forecasting: GlucoseTransformer → GlucoNet (simulated cohort)")


def cli_demo(out: Path, quick: bool, seed: int) -> Path:
    """``biokd demo glucose``."""
    return run_glucose_demo(out, quick=quick, seed=seed)
