"""Wall time of one distillation epoch at FACED size with the teacher cache against the live teacher.

Generates a FACED-layout release (123 subjects of pickled (28, 32, 7500) arrays), preprocesses it with the
real loader, then times one epoch over the training split (subjects 0–79, 6,720 windows of 32 × 2000) for:
the live 12-layer CBraMod teacher, building the cache, reading the cache, and MiC trained alone.

    python benchmarks/bench_cache.py [--subjects 123] [--work benchmarks/_work/faced] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from bench_distill import terms
from torch.utils.data import DataLoader, Subset

from biokd.data.reader import ShardDataset
from biokd.distill.cache import build_cache, data_fingerprint, hash_state_dict
from biokd.distill.distiller import Distiller
from biokd.eeg.cbramod import CBraModTeacher
from biokd.eeg.faced import FacedProtocol, preprocess_faced, write_synthetic_faced
from biokd.eeg.mic import MiC
from biokd.tasks import task_for
from biokd.trainer import Supervised, collate


def epoch_seconds(learner, data, device, batch_size, cache=None) -> float:
    opt = torch.optim.AdamW([p for p in learner.parameters() if p.requires_grad], lr=1e-3)
    learner.train()
    start = time.perf_counter()
    for batch in DataLoader(
        data, batch_size=batch_size, shuffle=True, collate_fn=collate, generator=torch.Generator().manual_seed(0)
    ):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        teacher_out = cache.lookup(batch["index"], device) if cache is not None else None
        loss, _ = learner.training_step(batch, teacher_out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=123)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/_work/faced"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--windows", type=int, default=None, help="time this many training windows (default all)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    raw, prep = args.work / "raw", args.work / "preprocessed"
    t0 = time.perf_counter()
    if not (raw / "Recording_info.csv").is_file():
        write_synthetic_faced(raw, subjects=range(args.subjects))
    preprocess_faced(raw, prep, protocol=FacedProtocol(), jobs=args.jobs, progress=False)
    print(f"data ready in {time.perf_counter() - t0:.0f} s")
    full = ShardDataset(prep, "train")
    task = task_for(full.spec)
    n_chans, n_times = full.input_shape("eeg")
    n_classes, n_full = full.n_classes, len(full)
    train = full if args.windows is None else Subset(full, range(min(args.windows, n_full)))
    torch.manual_seed(0)
    teacher = CBraModTeacher(n_chans, n_times, n_classes, head="linear").to(device)
    distiller = Distiller(MiC(n_chans, n_times, n_classes), teacher, terms(), task).to(device)
    distiller.setup({k: v.to(device) if torch.is_tensor(v) else v for k, v in collate([train[0], train[1]]).items()})
    distiller.to(device)

    live = epoch_seconds(distiller, train, device, args.batch_size)
    key = {"teacher": hash_state_dict(teacher), "data": data_fingerprint(prep)}
    t0 = time.perf_counter()
    cache = build_cache(
        args.work / "cache", distiller.teacher_targets, train, key, batch_size=args.batch_size, device=device
    )
    build = time.perf_counter() - t0
    cached = epoch_seconds(distiller, train, device, args.batch_size, cache)
    alone = epoch_seconds(Supervised(MiC(n_chans, n_times, n_classes).to(device), task), train, device, args.batch_size)
    scale = n_full / len(train)  # per-window costs extrapolated to the whole training split
    result = {
        "windows_timed": len(train),
        "windows_per_epoch": n_full,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "live_epoch_s": live * scale,
        "cache_build_s": build * scale,
        "cached_epoch_s": cached * scale,
        "student_alone_epoch_s": alone * scale,
        "cache_bytes": cache.nbytes * scale,
        "speed_up": live / cached,
        "cached_over_alone": cached / alone,
    }
    print(json.dumps(result, indent=2))
    print(
        f"| {n_full} windows ({len(train)} timed) | {live * scale:.0f} s | {cached * scale:.0f} s | "
        f"{alone * scale:.0f} s | ×{live / cached:.1f} | {cached / alone:.2f} | {cache.nbytes * scale / 2**20:.0f} MiB "
        f"| {build * scale:.0f} s |"
    )


if __name__ == "__main__":
    main()
