"""The glucose demo's settings on a fixed simulated cohort, in round 1's pipeline or the current one.

Round 1 (before the move to one core) is run from a checkout of commit 6c06dff with this file copied beside it:

    git worktree add /tmp/r1 6c06dff && cp benchmarks/bench_glucose_round1.py /tmp/r1/
    (cd /tmp/r1 && PYTHONPATH=. ../path/to/.venv/bin/python bench_glucose_round1.py --cohort /tmp/gcmp/cohort \\
        --out /tmp/gcmp/old --simulate)
    .venv/bin/python benchmarks/bench_glucose_round1.py --cohort /tmp/gcmp/cohort --out /tmp/gcmp/new

Prints the mean-over-patients RMSE, MAE and Clarke A of every model and the window counts (JSON).
"""

from __future__ import annotations

import argparse
import json

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--simulate", action="store_true", help="write the cohort first (4 adults x 7 days, seed 0)")
    args = parser.parse_args()
    try:  # the current layout
        from biokd.glucose.demo import GlucoseRunConfig, run_glucose
        from biokd.glucose.simulate import simulate_cohort

        cfg = GlucoseRunConfig(student={"vmd_mode": "sweeps"})  # round 1's decomposition
    except ImportError:  # round 1
        from biokd.datasets.simulate_glucose import simulate_cohort
        from biokd.pipelines.glucose import GlucoseRunConfig, run_glucose

        cfg = GlucoseRunConfig()
    if args.simulate:
        simulate_cohort(args.cohort, 4, 7, 0, jobs=2, gaps_per_day=0.3)
    result = run_glucose(args.out, cfg, cohort=args.cohort)
    metrics = {
        name: {h: {k: round(m[k], 3) for k in ("rmse", "mae", "clarke_a")} for h, m in r["mean_over_patients"].items()}
        for name, r in result["metrics"].items()
    }
    print(json.dumps({"windows": result["windows"], "metrics": metrics}, indent=1))
