"""The GPU path measured: CBraMod → MiC at FACED size (32 ch × 2000 samples, 9 classes), in one run.

Three ways to train the same distillation (the terms of configs/faced-distill.yaml), each timed over the same
batches after warm-up steps:

1. ``eager fp32, live teacher``: what a user writes first: the teacher runs on every batch, fp32, no compile,
   a plain loader (no workers, no pinned memory).
2. ``biokd default``: biokd's trainer defaults: the teacher's outputs read from the cache (built once; its
   build time is reported beside), bf16 autocast on a GPU.
3. ``cache + bf16 + compile``: the above with ``torch.compile`` (``train.compile``), loader workers and
   pinned memory.

Samples per second, and model FLOP utilisation: the FLOPs one training step really does (counted by
``torch.utils.flop_counter`` on one batch, so the cached variants do no teacher FLOPs) over the GPU's peak
dense bf16 rate (``--peak-tflops``, default from the GPU's name). ``--device cpu --tiny`` runs a small size
on CPU so CI can check the script (its figures mean nothing for a GPU).

    python benchmarks/bench_gpu.py --device cuda --batch-size 64 --steps 30 --json out.json
    python benchmarks/bench_gpu.py --device cpu --tiny
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from biokd.data.spec import TargetSpec
from biokd.distill.cache import build_cache
from biokd.distill.distiller import Distiller
from biokd.distill.terms import Term
from biokd.eeg.cbramod import CBraModTeacher
from biokd.eeg.mic import MiC
from biokd.tasks import Classification
from biokd.trainer import _compile, collate

#: Peak dense bf16 tensor throughput (TFLOP/s) by GPU name, from the vendors' data sheets.
PEAK_BF16 = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}
FACED = {"n_chans": 32, "n_times": 2000, "n_classes": 9, "n_layer": 12}
TINY = {"n_chans": 4, "n_times": 400, "n_classes": 3, "n_layer": 2}


class Windows(Dataset):
    """Random windows of the given size (the throughput does not depend on the values)."""

    def __init__(self, n: int, n_chans: int, n_times: int, n_classes: int):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, n_chans, n_times, generator=g)
        self.y = torch.randint(0, n_classes, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"eeg": self.x[i], "label": self.y[i], "index": i}


def terms(n_layer: int) -> list[Term]:
    """The loss terms of configs/faced-distill.yaml (all teacher layers routed, spectral, connectivity)."""
    layers = [f"backbone.encoder.layers.{i}" for i in range(n_layer)]
    last = layers[-1:]
    specs = [
        {"name": "task", "kind": "cross_entropy", "label_smoothing": 0.1},
        {"name": "kd", "kind": "kd", "temperature": 4.0},
        {"name": "layers", "kind": "feature", "metric": "cosine", "weight": 0.5, "student": "mimic",
         "pool": [1], "teacher": layers},
        {"name": "spectral", "kind": "spectral", "teacher": last, "student": "mimic", "pool": [1], "time_dim": -2,
         "weight": 0.1},
        {"name": "connectivity", "kind": "connectivity", "teacher": last, "student": "mimic", "pool": [2],
         "weight": 0.5},
    ]  # fmt: skip
    return [Term.from_config(s, f"terms[{i}]") for i, s in enumerate(specs)]


def build(size: dict[str, int], device: torch.device, probe: dict[str, Any]) -> Distiller:
    """The distiller at ``size`` on ``device``, its projections and routers made on ``probe``."""
    torch.manual_seed(0)
    task = Classification(TargetSpec("classification", classes=[f"c{i}" for i in range(size["n_classes"])]))
    dims = (size["n_chans"], size["n_times"], size["n_classes"])
    teacher = CBraModTeacher(*dims, n_layer=size["n_layer"], drop_prob=0.0)
    distiller = Distiller(MiC(*dims), teacher, terms(size["n_layer"]), task).to(device)
    distiller.setup({k: v.to(device) for k, v in probe.items()})
    return distiller.to(device)


def measure(
    distiller: Distiller,
    data: Dataset,
    device: torch.device,
    *,
    batch_size: int,
    steps: int,
    warmup: int,
    amp: bool,
    cache: Any = None,
    workers: int = 0,
    pin: bool = False,
) -> dict[str, float]:
    """Samples/s and FLOPs/step of ``steps`` training steps after ``warmup`` (compile happens in warm-up)."""
    use_amp = amp and device.type == "cuda"
    opt = torch.optim.AdamW([p for p in distiller.parameters() if p.requires_grad], lr=1e-4)
    loader = DataLoader(
        data, batch_size, shuffle=True, drop_last=True, collate_fn=collate, num_workers=workers, pin_memory=pin
    )
    distiller.train()

    def step(batch: dict[str, Any]) -> None:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        teacher_out = cache.lookup(batch["index"], device) if cache is not None else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, _ = distiller.training_step(batch, teacher_out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    batches = iter(_cycle(loader))
    for _ in range(warmup):
        step(next(batches))
    with FlopCounterMode(display=False) as counter:
        step(next(batches))
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(next(batches))
    _sync(device)
    seconds = time.perf_counter() - start
    return {"samples_per_s": steps * batch_size / seconds, "flops_per_step": float(counter.get_total_flops())}


def _cycle(loader: DataLoader):
    while True:
        yield from loader


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given is not None or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    size = TINY if args.tiny else FACED
    data = Windows(
        args.batch_size * (args.steps + args.warmup + 2), size["n_chans"], size["n_times"], size["n_classes"]
    )
    common = {"batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup}
    rows: dict[str, dict[str, float]] = {}
    probe = collate([data[0], data[1]])
    rows["eager fp32, live teacher"] = measure(build(size, device, probe), data, device, amp=False, **common)
    with tempfile.TemporaryDirectory() as tmp:
        distiller = build(size, device, probe)
        start = time.perf_counter()
        cache = build_cache(
            Path(tmp) / "cache", distiller.teacher_targets, data, {"bench": "gpu"}, batch_size=args.batch_size,
            device=device, log=lambda m: None,
        )  # fmt: skip
        _sync(device)
        cache_seconds = time.perf_counter() - start
        rows["biokd default (cache, bf16)"] = measure(distiller, data, device, amp=True, cache=cache, **common)
        fast = build(size, device, probe)
        if not args.no_compile:
            _compile(fast)
        pin = device.type == "cuda"
        rows["cache + bf16 + compile"] = measure(
            fast, data, device, amp=True, cache=cache, workers=args.workers, pin=pin, **common
        )
    peak = peak_tflops(device, args.peak_tflops)
    base = rows["eager fp32, live teacher"]["samples_per_s"]
    for r in rows.values():
        achieved = r["flops_per_step"] * r["samples_per_s"] / args.batch_size
        r["tflops"] = achieved / 1e12
        r["mfu"] = achieved / (peak * 1e12) if peak else None
        r["speedup"] = r["samples_per_s"] / base
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thr"
    return {
        "machine": machine,
        "torch": torch.__version__,
        "size": size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "peak_bf16_tflops": peak,
        "cache_build_s": cache_seconds,
        "cache_items": len(data),
        "compiled": not args.no_compile,
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    size = result["size"]
    lines = [
        f"{result['machine']}; torch {result['torch']}; {size['n_chans']} ch × {size['n_times']} samples, "
        f"{size['n_classes']} classes, teacher {size['n_layer']} layers; batch {result['batch_size']}; "
        f"cache built in {result['cache_build_s']:.1f} s for {result['cache_items']} windows",
        "| variant | samples/s | × eager | TFLOP/s | MFU |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in result["rows"].items():
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        lines.append(f"| {name} | {r['samples_per_s']:.1f} | {r['speedup']:.2f} | {r['tflops']:.2f} | {mfu} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="A small size for CPU checks (figures are not GPU's).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="Untimed steps first (torch.compile compiles here).")
    parser.add_argument("--workers", type=int, default=4, help="Loader workers of the fastest variant.")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="Peak dense bf16 TFLOP/s of the device.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
