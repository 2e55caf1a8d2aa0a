"""Preprocessing throughput and peak memory on a full-size PhysioNet-MI layout.

Builds ``benchmarks/_work/eegmmidb-full/S001 … S109`` (the six imagery runs) out of symbolic links to the real
subject-1 files, then runs ``preprocess_physionet_mi`` in a fresh process per configuration (subjects × jobs)
into a fresh output folder (nothing reused). Peak memory is the largest sum of RSS over the process tree
(parent + worker processes, sampled from /proc every 50 ms) and, as a cross-check, the largest single-process
``ru_maxrss`` that ``os.wait4`` reports for the run.

    .venv/bin/python benchmarks/bench_preprocess_physionet.py --configs 10:1,10:2,109:2,109:1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
RUNS = (4, 6, 8, 10, 12, 14)

CHILD = """
import sys, time, json
from biokd.eeg.physionet_mi import preprocess_physionet_mi
root, out, n, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t = time.perf_counter()
report = preprocess_physionet_mi(root, out, subjects=range(1, n + 1), jobs=jobs, progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "windows": report.n_windows,
                  "processed": len(report.processed), "reused": len(report.reused)}))
"""


def build_layout(real_s001: Path, root: Path, n_subjects: int = 109) -> Path:
    """``root/S###/S###R##.edf`` → links to the real subject-1 runs."""
    for subject in range(1, n_subjects + 1):
        folder = root / f"S{subject:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for run in RUNS:
            link = folder / f"S{subject:03d}R{run:02d}.edf"
            if not link.is_symlink():
                link.symlink_to(real_s001 / f"S001R{run:02d}.edf")
    for name in ("RECORDS", "ANNOTATORS", "wfdbcal"):  # the release's non-subject entries
        (root / name).write_text("")
    return root


def _tree_rss_kib(pid: int) -> int:
    """Sum of VmRSS (KiB) of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        stack.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return total


def run_config(root: Path, n_subjects: int, jobs: int) -> dict:
    out = WORK / f"out-{n_subjects}-{jobs}"
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(out), str(n_subjects), str(jobs)],
        stdout=subprocess.PIPE,
        text=True,
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_kib(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"configuration {n_subjects} subjects × {jobs} jobs failed (exit {proc.returncode})")
    result = json.loads(stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return {
        "subjects": n_subjects,
        "jobs": jobs,
        **result,
        "windows_per_s": result["windows"] / result["seconds"],
        "peak_tree_rss_mib": peak / 1024,
        "max_process_rss_mib": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=HERE.parent.parent / "shared" / "data",
        help="the shared real-data folder (holds eegmmidb/S001)",
    )
    parser.add_argument("--configs", default="10:1,10:2,109:2,109:1", help="subjects:jobs,…")
    args = parser.parse_args()
    root = build_layout(args.data / "eegmmidb" / "S001", WORK / "eegmmidb-full")
    results = []
    for item in args.configs.split(","):
        n, jobs = (int(v) for v in item.split(":"))
        results.append(run_config(root, n, jobs))
        r = results[-1]
        print(
            f"{r['subjects']:>4} subjects  {r['jobs']} jobs  {r['windows']:>6} windows  {r['seconds']:7.1f} s  "
            f"{r['windows_per_s']:6.1f} windows/s  peak tree RSS {r['peak_tree_rss_mib']:6.0f} MiB  "
            f"max process RSS {r['max_process_rss_mib']:6.0f} MiB",
            flush=True,
        )
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    (WORK / "bench_preprocess_physionet.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2)
    )
    print(json.dumps(machine))


if __name__ == "__main__":
    main()
