"""The GPU benchmark script runs at a tiny size on CPU (its figures there mean nothing; the script is checked)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def test_bench_gpu_runs_tiny_on_cpu(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    argv = ["--device", "cpu", "--tiny", "--batch-size", "4", "--steps", "1", "--warmup", "0", "--workers", "0"]
    result = bench.main([*argv, "--no-compile", "--json", str(out)])
    assert json.loads(out.read_text())["rows"].keys() == result["rows"].keys()
    rows = result["rows"]
    assert list(rows) == ["eager fp32, live teacher", "biokd default (cache, bf16)", "cache + bf16 + compile"]
    assert all(r["samples_per_s"] > 0 and r["mfu"] is None for r in rows.values())
    live, cached = (
        rows["eager fp32, live teacher"]["flops_per_step"],
        rows["biokd default (cache, bf16)"]["flops_per_step"],
    )
    assert cached < 0.5 * live  # with the cache no teacher FLOPs are spent: the 2-layer teacher dwarfs MiC
    assert result["cache_items"] == 4 * 3
