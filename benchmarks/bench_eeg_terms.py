"""What the spectral term adds on the EEG demo: distilled, distilled without the spectral term, and alone.

Runs the demo (``biokd.eeg.demo.run_eeg_demo``: teacher, distilled student, student alone), then the same
distillation without the spectral term (same data, teacher, budget and seed), and scores the three students on
the same test subjects, with paired intervals over subjects for the differences a reader will draw.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_eeg_terms.py --out /tmp/bench-eeg-terms [--quick]

Writes ``<out>/bench_eeg_terms.json`` and prints the rows for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from biokd._io import write_json
from biokd.data.reader import ShardDataset
from biokd.eeg.demo import QUICK, DemoSize, run_ablation, run_eeg_demo
from biokd.metrics.classification import classification_report, paired_difference_ci
from biokd.models import load_run_model
from biokd.pipeline import predictions
from biokd.tasks import task_for

METRICS = ["balanced_accuracy", "cohen_kappa"]
ROWS = {
    "distilled (all terms)": "runs/student",
    "distilled without spectral": "runs/no-spectral",
    "alone": "runs/student/alone",
}
PAIRS = [
    ("distilled (all terms)", "distilled without spectral"),
    ("distilled (all terms)", "alone"),
    ("distilled without spectral", "alone"),
]


def score(out: Path, n_boot: int) -> dict:
    """Each student's test predictions, scores with subject intervals, and the paired differences."""
    test = ShardDataset(out / "preprocessed", "test")
    task = task_for(test.spec)
    probs, y, subjects = {}, None, None
    for name, run in ROWS.items():
        output, y, subjects = predictions(load_run_model(out / run), test, task)
        probs[name] = task.probabilities(output)
    rows = {}
    for name in ROWS:
        rep = classification_report(y, probs[name], subjects, n_boot=n_boot)
        rows[name] = {m: rep[m] for m in METRICS} | {"ci": {m: rep["ci"][m] for m in METRICS}}
        rows[name].update({k: rep[k] for k in ("ci_method", "n_units", "few_units")})
    diffs = {
        f"{a} − {b}": paired_difference_ci(METRICS, y, probs[a], probs[b], subjects, n_boot=n_boot) for a, b in PAIRS
    }
    return {"n_subjects": len(set(subjects)), "n_windows": len(y), "scores": rows, "differences": diffs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="the test-suite size (seconds, not a result)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    size: DemoSize = QUICK if args.quick else DemoSize()
    load = os.getloadavg()
    start = time.perf_counter()
    run_eeg_demo(args.out, size, seed=args.seed)
    demo_s = time.perf_counter() - start
    run_ablation(args.out, size, seed=args.seed)
    ablation_s = time.perf_counter() - start - demo_s
    result = score(args.out, size.n_boot)
    metrics = json.loads((args.out / "runs" / "student" / "metrics.json").read_text())
    result.update(
        demo_wall_s=round(demo_s, 1),
        ablation_wall_s=round(ablation_s, 1),
        load_average_at_start=[round(v, 2) for v in load],
        load_average_at_end=[round(v, 2) for v in os.getloadavg()],
        cpus=os.cpu_count(),
        teacher=metrics["teacher"]["balanced_accuracy"],
        size=vars(size),
        seed=args.seed,
    )
    write_json(args.out / "bench_eeg_terms.json", result)
    print(f"test: {result['n_subjects']} subjects, {result['n_windows']} windows; demo {demo_s:.0f} s")
    print("| student | balanced accuracy [95% CI] | Cohen's κ [95% CI] |")
    print("|---|---|---|")
    for name, row in result["scores"].items():
        cells = [f"{row[m]:.3f} [{row['ci'][m][0]:.3f}, {row['ci'][m][1]:.3f}]" for m in METRICS]
        print(f"| {name} | {' | '.join(cells)} | {row['ci_method']}, {row['n_units']} subjects |")
    for pair, d in result["differences"].items():
        ci = d["ci"]
        cells = [f"{d['difference'][m]:+.3f} [{ci[m][0]:+.3f}, {ci[m][1]:+.3f}]" for m in METRICS]
        print(f"| {pair} | {' | '.join(cells)} | {d['ci_method']}, {d['n_units']} subjects |")


if __name__ == "__main__":
    main()
