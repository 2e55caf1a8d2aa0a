"""ABIDE preprocessing throughput and peak memory on generated releases, and one distillation epoch at full size.

For each size (default 200 and 1035 subjects, the release's count with files) a generated release is written as
real ``.1D`` files in the PCP layout (CC200: 200 ROIs, 100–200 time points per site) with a real-format
phenotypic table, then ``preprocess_abide`` (correlation, empirical covariance) runs in a fresh process per
configuration (subjects × jobs) into a fresh output folder; the clock starts after the parent's imports
(nilearn, scikit-learn), so with 2 jobs it still counts the workers' start-up. Peak memory is the largest sum of
RSS over the process tree (parent + workers, sampled from /proc every 50 ms) and the largest process ``ru_maxrss``.

Then, on the largest store, one epoch over the training split of BrainNetCNN distilled from the default
BrainNetTransformer with the terms of ``configs/abide-distill.yaml``: with the live teacher, building the teacher
cache, reading the cache, and the student alone (untrained teacher: the cost, not the accuracy, is measured).

    .venv/bin/python benchmarks/bench_abide.py --sizes 200,1035 --jobs 1,2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench_preprocess_physionet import _tree_rss_kib

HERE = Path(__file__).resolve().parent

CHILD = """
import sys, time, json
import nilearn.connectome, sklearn.covariance, sklearn.model_selection  # imported before the clock starts
from biokd.fmri.abide import AbideProtocol
from biokd.fmri.preprocess import preprocess_abide
root, out, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
report = preprocess_abide(root, out, AbideProtocol(), jobs=jobs, progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "processed": len(report.processed),
                  "skipped": len(report.skipped)}))
"""


def release(work: Path, n_subjects: int) -> Path:
    """A generated CC200 release of at least ``n_subjects`` subjects (the fewest sites of ≤ 10 that divide it)."""
    from biokd.fmri.synthetic import write_synthetic_abide

    root = work / f"release-{n_subjects}"
    if not (root / "Phenotypic_V1_0b_preprocessed1.csv").is_file():
        n_sites = next((s for s in range(2, 11) if n_subjects % s == 0 and n_subjects // s <= 200), 10)
        t = time.perf_counter()
        write_synthetic_abide(root, n_sites, math.ceil(n_subjects / n_sites), atlas="rois_cc200", seed=0)
        print(f"release of {n_subjects} subjects written in {time.perf_counter() - t:.0f} s", flush=True)
    return root


def preprocess(root: Path, out: Path, jobs: int) -> dict:
    """``preprocess_abide`` in a fresh process; its time, the tree's peak RSS and the largest process RSS."""
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(out), str(jobs)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_kib(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"preprocessing {root} with {jobs} jobs failed")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "jobs": jobs, "subjects_per_s": result["processed"] / result["seconds"],
            "peak_tree_rss_mib": peak / 1024, "max_process_rss_mib": usage.ru_maxrss / 1024}  # fmt: skip


def distill_epoch(store: Path, work: Path, batch_size: int) -> dict:
    """Seconds of one training epoch: live teacher, cache build, cached teacher, student alone."""
    import torch
    from torch.utils.data import DataLoader

    from biokd.config import load_config
    from biokd.data.reader import ShardDataset
    from biokd.distill.cache import build_cache, data_fingerprint, hash_state_dict
    from biokd.distill.distiller import Distiller
    from biokd.pipeline import ModelConfig, RunConfig, build_model
    from biokd.tasks import task_for
    from biokd.trainer import Supervised, collate, seed_everything

    cfg = load_config(RunConfig, HERE.parent / "configs" / "abide-distill.yaml")
    train = ShardDataset(store, "train")
    task = task_for(train.spec)
    seed_everything(0)
    teacher = build_model(ModelConfig(name="brainnet_transformer"), train.spec, "teacher").eval()
    student = build_model(ModelConfig(name="brainnetcnn"), train.spec, "student")
    distiller = Distiller(student, teacher, cfg.distill.terms, task)
    distiller.setup(collate([train[0], train[1]]))

    def epoch(learner, cache=None) -> float:
        params = [p for p in learner.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3)
        learner.train()
        start = time.perf_counter()
        loader = DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=collate,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
        for batch in loader:
            loss, _ = learner.training_step(batch, cache.lookup(batch["index"], "cpu") if cache is not None else None)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - start

    live = epoch(distiller)
    shutil.rmtree(work / "cache", ignore_errors=True)
    key = {"teacher": hash_state_dict(teacher), "data": data_fingerprint(store)}
    t = time.perf_counter()
    cache = build_cache(work / "cache", distiller.teacher_targets, train, key, batch_size=batch_size, progress=False,
                        log=lambda _: None)  # fmt: skip
    build = time.perf_counter() - t
    cached = epoch(distiller, cache)
    alone = epoch(Supervised(build_model(ModelConfig(name="brainnetcnn"), train.spec, "student"), task))
    models = {"teacher": teacher, "student": student}
    n_params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    return {"train_subjects": len(train), "batch_size": batch_size, "threads": torch.get_num_threads(),
            "live_epoch_s": live, "cache_build_s": build, "cached_epoch_s": cached, "alone_epoch_s": alone,
            "cache_mib": cache.nbytes / 2**20, "speed_up": live / cached, "parameters": n_params}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,1035", help="subjects per generated release, comma-separated")
    parser.add_argument("--jobs", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--work", type=Path, default=HERE / "_work" / "abide")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-distill", action="store_true", help="skip the distillation epoch")
    args = parser.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    rows = []
    for n in sizes:
        root = release(args.work, n)
        for jobs in (int(v) for v in args.jobs.split(",")):
            row = {"subjects": n, **preprocess(root, args.work / f"store-{n}-{jobs}", jobs)}
            rows.append(row)
            print(f"{n:>5} subjects  {jobs} jobs  {row['seconds']:7.1f} s  {row['subjects_per_s']:6.1f} subjects/s  "
                  f"peak tree RSS {row['peak_tree_rss_mib']:5.0f} MiB  max process RSS "
                  f"{row['max_process_rss_mib']:5.0f} MiB", flush=True)  # fmt: skip
    result: dict = {"preprocess": rows}
    if not args.no_distill:
        store = args.work / f"store-{max(sizes)}-{args.jobs.split(',')[0]}"
        result["distill_epoch"] = distill_epoch(store, args.work, args.batch_size)
        print(json.dumps(result["distill_epoch"], indent=2), flush=True)
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                         "load_average": os.getloadavg()}  # fmt: skip
    (args.work / "bench_abide.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
