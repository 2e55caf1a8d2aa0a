"""Distillation throughput: CBraMod → MiC against MiC alone, at PhysioNet-MI and FACED input sizes.

Training samples per second for (a) distillation with the live 12-layer teacher, (b) distillation reading
the teacher's outputs from the cache, (c) the student trained alone; plus MiC's single-thread CPU latency.

    python benchmarks/bench_distill.py [--device cpu|cuda] [--batches 6] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from biokd.data.spec import TargetSpec
from biokd.distill.cache import build_cache
from biokd.distill.distiller import Distiller
from biokd.distill.terms import KD, Connectivity, Feature, Spectral, TaskLoss, Term
from biokd.eeg.cbramod import CBraModTeacher
from biokd.eeg.mic import MiC
from biokd.profiling import cpu_latency_ms
from biokd.tasks import Task, task_for
from biokd.trainer import Supervised

SIZES = {"physionet-mi": (64, 800, 4), "faced": (32, 2000, 9)}


class RandomWindows(Dataset):
    def __init__(self, n: int, n_chans: int, n_times: int, n_classes: int):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, n_chans, n_times, generator=g)
        self.y = torch.randint(0, n_classes, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"eeg": self.x[i], "label": self.y[i], "index": i}


def terms() -> list[Term]:
    layers = [f"backbone.encoder.layers.{i}" for i in range(12)]
    return [
        TaskLoss(name="task", label_smoothing=0.1),
        KD(name="kd", temperature=4.0),
        Feature(name="layers", teacher=layers, student="mimic", metric="cosine", pool=[1]),
        # the patch axis of 200-sample patches at 200 Hz: one patch per second
        Spectral(name="spectral", teacher=layers[-1:], student="mimic", pool=[1], time_dim=-2, sfreq=1.0),
        Connectivity(name="connectivity", teacher=layers[-1:], student="mimic", pool=[2]),
    ]


def classification(n_classes: int) -> Task:
    return task_for(TargetSpec(kind="classification", classes=[f"class {k}" for k in range(n_classes)]))


def samples_per_second(learner, batches, device, cache=None) -> float:
    opt = torch.optim.AdamW([p for p in learner.parameters() if p.requires_grad], lr=1e-3)
    use_amp = device.type == "cuda"
    learner.train()

    def step(batch):
        teacher_out = cache.lookup(batch["index"], device) if cache is not None else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, _ = learner.training_step(batch, teacher_out)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(batches[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sum(len(b["label"]) for b in batches[1:]) / (time.perf_counter() - start)


def run(name: str, device: torch.device, n_batches: int, batch_size: int) -> dict:
    n_chans, n_times, n_classes = SIZES[name]
    data = RandomWindows(n_batches * batch_size, n_chans, n_times, n_classes)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size)
    batches = [{k: v.to(device) for k, v in b.items()} for b in loader]
    torch.manual_seed(0)
    teacher = CBraModTeacher(n_chans, n_times, n_classes, head="linear").to(device)
    student = MiC(n_chans, n_times, n_classes).to(device)
    task = classification(n_classes)
    distiller = Distiller(student, teacher, terms(), task).to(device)
    distiller.setup(batches[0])
    distiller.to(device)
    live = samples_per_second(distiller, batches, device)
    with tempfile.TemporaryDirectory() as tmp:
        cache = build_cache(
            Path(tmp),
            distiller.teacher_targets,
            data,
            {"bench": name},
            batch_size=batch_size,
            device=device,
            log=lambda m: None,
        )
        cached = samples_per_second(distiller, batches, device, cache)
        cache_mb = cache.nbytes / len(data) / 1e6
    alone = samples_per_second(Supervised(MiC(n_chans, n_times, n_classes).to(device), task), batches, device)
    student_cpu = MiC(n_chans, n_times, n_classes).eval()
    latency = cpu_latency_ms(student_cpu, (torch.randn(1, n_chans, n_times),), threads=1, repeats=50)
    return {
        "size": name,
        "input": [n_chans, n_times],
        "live_teacher_sps": live,
        "cached_teacher_sps": cached,
        "student_alone_sps": alone,
        "cache_mb_per_window": cache_mb,
        "mic_cpu_1thread_ms": latency,
    }


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    machine = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"{cpu_name()}, {torch.get_num_threads()} threads"
    )
    results = [run(name, device, args.batches, args.batch_size) for name in SIZES]
    print(f"machine: {machine}; torch {torch.__version__}; batch {args.batch_size}")
    print(
        "| input | distil, live teacher | distil, cached teacher | MiC alone | cache / window | MiC 1-thread CPU ms |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        lat = r["mic_cpu_1thread_ms"]
        print(
            f"| {r['size']} {r['input'][0]}×{r['input'][1]} | {r['live_teacher_sps']:.1f}/s | "
            f"{r['cached_teacher_sps']:.1f}/s | {r['student_alone_sps']:.1f}/s | {r['cache_mb_per_window']:.3f} MB"
            f" | p50 {lat['p50']:.2f}, p95 {lat['p95']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
