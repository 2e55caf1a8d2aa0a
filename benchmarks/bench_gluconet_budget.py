"""GlucoNet on the wearable budget (≤ 60 KB, ≤ 0.5 ms per forecast, one thread): folded vs 30-sweep VMD.

Trains GlucoNet alone (no teacher: the comparison is about the decomposition) three ways from the same seed
and initial weights on a small simulated cohort, and scores each on the test files (per-patient RMSE at 30
and 60 min and Clarke A, averaged over patients, as ``biokd.glucose.demo.evaluate`` does):

* ``sweeps``: today's model, 30 adaptive VMD sweeps unrolled in the graph (centre frequencies follow each
  window);
* ``folded``: centre frequencies fixed at their starting values, the 30 sweeps folded into one T × T matrix;
* ``folded-calibrated``: the same, centre frequencies fixed at the median the adaptive VMD settles at on the
  training windows (``median_centre_frequencies``).

Then exports each trained model (ONNX fp32, ONNX int8 dynamic; ExecuTorch fp32/int8 for the default folded
model only: lowering unrolls the LSTM and takes minutes, the 30-sweep graph longer still, see the Export
section of RESULTS.md) and measures file size and single-thread latency (``biokd.export.card.measure_runtime``:
fresh subprocess, one window, p50/p95). Trained runs under ``--out/runs`` are reused when settings match.

    python benchmarks/bench_gluconet_budget.py --out /tmp/gluconet-budget --formats onnx,onnx-int8  # ~6 min
    python benchmarks/bench_gluconet_budget.py --out /tmp/gluconet-budget   # + ExecuTorch, ~3 min more idle
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biokd.data.reader import ShardDataset
from biokd.export.card import machine, measure_runtime
from biokd.glucose.demo import GlucoseRunConfig, evaluate, test_arrays
from biokd.glucose.gluconet import GlucoNet, median_centre_frequencies
from biokd.glucose.ohiot1dm import OhioProtocol, preprocess_ohiot1dm
from biokd.glucose.simulate import simulate_cohort
from biokd.tasks import task_for
from biokd.trainer import Supervised, TrainConfig, fit, load_best

BUDGET_KB, BUDGET_MS = 60.0, 0.5


def _exports(name: str, model: GlucoNet, out: Path, calib: torch.Tensor, formats: list[str]) -> list[dict[str, Any]]:
    from biokd.export.executorch import export_executorch
    from biokd.export.onnx import export_onnx, quantize_onnx

    example = calib[:1]
    rows = []
    for fmt in formats:
        tic = time.perf_counter()
        if fmt.startswith("onnx"):
            path = out / f"{name}.onnx"
            if not any(r["format"] == "onnx" for r in rows):  # fresh in this run (onnx-int8 quantizes it)
                export_onnx(model, (example,), path, ("glucose_inputs",), ("forecast",))
            if fmt == "onnx-int8":
                src, path = path, out / f"{name}.int8.onnx"
                quantize_onnx(src, path, "dynamic")
            runtime = "onnxruntime"
        else:
            path = out / f"{name}{'.int8' if fmt.endswith('int8') else ''}.pte"
            batches = [(calib[i : i + 1],) for i in range(32)]
            export_executorch(
                model, (example,), path, quantize=fmt.endswith("int8"), calibration=batches, observer="minmax"
            )
            runtime = "executorch"
        build_s = time.perf_counter() - tic
        measured = measure_runtime(runtime, [[1, 6, model.config["n_times"]]], path=path)
        lat = measured.get("latency_ms", {})
        size_kb = path.stat().st_size / 1000
        row = {
            "model": name,
            "format": fmt,
            "size_kb": round(size_kb, 1),
            "p50_ms": lat.get("p50"),
            "p95_ms": lat.get("p95"),
            "build_s": round(build_s, 1),
            "within_budget": bool(lat and size_kb <= BUDGET_KB and lat["p50"] <= BUDGET_MS),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/gluconet-budget"))
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--days", type=float, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--formats",
        default="onnx,onnx-int8,executorch,executorch-int8",
        help="export formats; ExecuTorch ones for the default folded model only (lowering takes minutes)",
    )
    args = parser.parse_args()

    torch.set_num_threads(1)
    tic = time.perf_counter()
    cfg = replace(GlucoseRunConfig(), patients=args.patients, days=args.days, seed=args.seed, jobs=args.jobs)
    cohort = args.out / "cohort"
    simulate_cohort(cohort, cfg.patients, cfg.days, cfg.seed, jobs=cfg.jobs, gaps_per_day=cfg.gaps_per_day)  # reused
    preprocess_ohiot1dm(cohort, args.out / "windows", OhioProtocol(val_fraction=cfg.val_fraction))
    data = {s: ShardDataset(args.out / "windows", s) for s in ("train", "val", "test")}
    timings = {"data_s": time.perf_counter() - tic}
    task = task_for(data["train"].spec)
    train_inputs, _ = test_arrays(data["train"])
    omega = median_centre_frequencies(train_inputs)
    variants = {
        "sweeps": {"vmd_mode": "sweeps"},
        "folded": {"vmd_mode": "folded"},
        "folded-calibrated": {"vmd_mode": "folded", "vmd_omega": omega},
    }
    models = {}
    for name, kwargs in variants.items():
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed + 1)  # the same initial weights for every variant
        learner = Supervised(GlucoNet(n_outputs=task.n_outputs, **kwargs), task)
        run_dir = args.out / "runs" / f"gluconet-{name}"
        train_cfg = TrainConfig(
            epochs=args.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed,
            amp=False, select_metric="rmse", split_by="time", progress=False,
        )  # fmt: skip
        fit(learner, data["train"], data["val"], train_cfg, run_dir, task, resume=False, log=lambda s: None)
        models[name] = load_best(learner, run_dir).eval()
        timings[f"train_{name}_s"] = time.perf_counter() - t0
    metrics = evaluate(models, data["test"])
    accuracy = {
        name: {
            h: {k: round(m[k], 3) for k in ("rmse", "mae", "clarke_a")} for h, m in result["mean_over_patients"].items()
        }
        for name, result in metrics.items()
    }
    print(json.dumps(accuracy, indent=1), flush=True)

    exports_dir = args.out / "exports"
    exports_dir.mkdir(parents=True, exist_ok=True)
    calib = train_inputs[:: max(1, len(train_inputs) // 32)][:32]
    wanted = args.formats.split(",")
    costs = []
    for name, model in models.items():
        t0 = time.perf_counter()
        formats = [f for f in wanted if f.startswith("onnx") or name == "folded"]
        costs += _exports(name, model, exports_dir, calib, formats)
        timings[f"export_{name}_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - tic
    result = {
        "settings": {**vars(args), "out": str(args.out), "centre_frequencies_calibrated": omega},
        "windows": {s: len(d) for s, d in data.items()},
        "accuracy": accuracy,
        "costs": costs,
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "machine": {**machine(), "python": platform.python_version(), "torch": torch.__version__},
        "load_average": list(np.round(__import__("os").getloadavg(), 2)),
    }
    (args.out / "budget.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("windows", "timings", "machine", "load_average")}, indent=1))


if __name__ == "__main__":
    main()
