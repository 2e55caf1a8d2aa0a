"""Glucose benchmark: a simulated cohort (default 10 patients x 14 days), OhioT1DM challenge protocol.

Reports RMSE, MAE and Clarke zone A at 30 and 60 minutes (mean over patients) for persistence, linear
extrapolation, the GlucoseTransformer teacher, GlucoNet distilled from it and GlucoNet trained alone,
with parameters and CPU latency (one window, one thread). Writes ``<out>/bench.json`` and
``<out>/report.{md,html}`` and prints a Markdown table for ``benchmarks/RESULTS.md``.

    python benchmarks/bench_glucose.py --out /tmp/bench-glucose            # about 15 min on 2 CPU cores
    python benchmarks/bench_glucose.py --patients 3 --days 4 --epochs 2    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch

from biokd._io import write_json
from biokd.glucose.demo import GlucoseRunConfig, run_glucose, write_glucose_report

MODELS = ("persistence", "linear extrapolation", "teacher (GlucoseTransformer)", "GlucoNet distilled", "GlucoNet alone")


def machine() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, torch {torch.__version__}"


def table(results: dict) -> str:
    lines = [
        "| model | parameters | CPU ms/window | RMSE 30 | MAE 30 | Clarke A 30 | RMSE 60 | MAE 60 | Clarke A 60 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        m = results["metrics"][name]["mean_over_patients"]
        c = results["costs"][name]
        lines.append(
            f"| {name} | {c['parameters']:,} | {c['cpu_ms_per_window']:.2f} | {m['30min']['rmse']:.2f} | "
            f"{m['30min']['mae']:.2f} | {100 * m['30min']['clarke_a']:.1f}% | {m['60min']['rmse']:.2f} | "
            f"{m['60min']['mae']:.2f} | {100 * m['60min']['clarke_a']:.1f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-glucose"))
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--days", type=float, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="simulation processes")
    parser.add_argument("--epochs", type=int, default=None, help="teacher and student epochs (default 8/12)")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = GlucoseRunConfig(
        patients=args.patients,
        days=args.days,
        seed=args.seed,
        jobs=args.jobs,
        teacher_epochs=args.epochs or 8,
        student_epochs=args.epochs or 12,
        batch_size=args.batch_size,
        teacher={"d_model": 96, "n_layers": 3, "dim_feedforward": 192},
    )
    tic = time.perf_counter()
    results = run_glucose(args.out, cfg)
    wall = time.perf_counter() - tic
    write_glucose_report(args.out, results, f"Glucose benchmark: {args.patients} simulated patients x {args.days} days")
    summary = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "wall_s": round(wall, 1),
        "seconds_per_simulated_day": results["cohort"]["seconds_per_day"] if results["cohort"] else None,
        "windows": results["windows"],
        "timings": results["timings"],
        "table": table(results),
        "metrics": {k: results["metrics"][k]["mean_over_patients"] for k in MODELS},
        "costs": results["costs"],
    }
    write_json(args.out / "bench.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("table", "metrics")}, indent=2))
    print(summary["table"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
