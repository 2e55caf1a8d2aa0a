"""Model cards beside every export (``<file>.card.json`` and ``<file>.card.md``) and runtime measurements.

A card says what goes in (input names, shapes, dtype, channels in order, sampling rate, window, units and
scaling), what comes out (class names or forecast horizons), what the file costs (size, parameters, FLOPs,
single-thread latency p50/p95, peak memory), how faithful it is (the parity figures), where it comes from
(teacher, data, metrics) and what it is not for.

Latency and memory are measured by :func:`measure_runtime` in a fresh subprocess (``python -m
biokd.export.card``), so nothing the parent process has loaded is counted: after the runtime is imported the
peak-RSS counter is reset (``/proc/self/clear_refs`` ← 5, Linux ≥ 4.0) and the baseline RSS read; then the
model is loaded and run (warm-up, then timed runs of one window, one thread). Peak memory = ``VmHWM`` at the
end minus that baseline: the native memory of the loaded model, its arena and buffers, which tracemalloc
cannot see. Where the reset is unavailable, ``ru_maxrss`` growth is used and the card says so.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._io import sha256_file, write_json, write_text

INTENDED_USE = (
    "Research use: studying how well small models distilled from biomedical foundation models run on wearable "
    "hardware. Not a medical device; not validated for diagnosis, treatment or dosing decisions."
)
LIMITATIONS = (
    "Evaluated only on the data named below; performance on other devices, montages, populations or sensor "
    "models is unknown.",
    "Inputs must follow the input contract exactly (channel order, sampling rate, window length, units and "
    "scaling); nothing in the file checks this.",
    "Latency and memory were measured on the machine named in the card, not on a wearable.",
)
RUNTIMES = {
    "onnx": "onnxruntime",
    "onnx-int8": "onnxruntime",
    "executorch": "executorch",
    "executorch-int8": "executorch",
}


# -- measurement -------------------------------------------------------------------------------------------
def measure_runtime(
    runtime: str,
    input_shapes: Sequence[Sequence[int]],
    *,
    path: str | Path | None = None,
    model_spec: Mapping[str, Any] | None = None,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 200,
    max_seconds: float = 5.0,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Single-window latency (ms, p50/p95) and peak memory of a model in ``runtime``, in a fresh subprocess.

    ``runtime``: ``onnxruntime`` or ``executorch`` (give ``path``), or ``torch`` (give ``model_spec``, a
    ``model.json``-style ``{"class", "kwargs"}``; weights are random, which does not change the cost).
    Timed runs stop after ``repeats`` runs or ``max_seconds`` (at least 20 runs).
    """
    spec = {
        "runtime": runtime,
        "path": str(path) if path is not None else None,
        "model_spec": dict(model_spec) if model_spec is not None else None,
        "input_shapes": [list(s) for s in input_shapes],
        "threads": threads,
        "warmup": warmup,
        "repeats": repeats,
        "max_seconds": max_seconds,
    }
    package_root = str(Path(__file__).resolve().parents[2])  # biokd importable even when not installed
    pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": pythonpath}
    proc = subprocess.run(
        [sys.executable, "-m", "biokd.export.card", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"measurement subprocess failed (exit {proc.returncode}): {' | '.join(tail)}"}
    return json.loads(lines[-1])


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Body of the measuring subprocess: import the runtime, reset the peak, load, run, report."""
    import resource

    import numpy as np

    runtime, threads = spec["runtime"], int(spec["threads"])
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape).astype(np.float32) for shape in spec["input_shapes"]]
    if runtime == "onnxruntime":
        import onnxruntime  # noqa: F401  (imported before the baseline)
    elif runtime == "executorch":
        import executorch.runtime  # noqa: F401
    elif runtime == "torch":
        import torch

        torch.set_num_threads(threads)
    else:
        raise ValueError(f"unknown runtime {runtime!r}")

    method = "VmHWM growth after a reset through /proc/self/clear_refs"
    try:
        Path("/proc/self/clear_refs").write_text("5")
        baseline = _rss_kib("VmRSS")
        if baseline is None:
            raise OSError("no VmRSS")
    except OSError:
        method = "ru_maxrss growth (peak-RSS reset unavailable; includes earlier peaks)"
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    if runtime == "onnxruntime":
        from .onnx import OnnxPredictor

        predictor: Any = OnnxPredictor(spec["path"], threads=threads)
    elif runtime == "executorch":
        from .executorch import ExecuTorchPredictor

        predictor = ExecuTorchPredictor(spec["path"], threads=threads)
    else:
        from ..models import model_from_spec
        from .parity import TorchPredictor

        predictor = TorchPredictor(model_from_spec(spec["model_spec"]))

    for _ in range(int(spec["warmup"])):
        predictor(*arrays)
    times: list[float] = []
    deadline = time.perf_counter() + float(spec["max_seconds"])
    while len(times) < int(spec["repeats"]) and (len(times) < 20 or time.perf_counter() < deadline):
        start = time.perf_counter()
        predictor(*arrays)
        times.append((time.perf_counter() - start) * 1e3)
    peak = _rss_kib("VmHWM") if method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times.sort()
    return {
        "runtime": runtime,
        "threads": threads,
        "latency_ms": {
            "p50": float(np.percentile(times, 50)),
            "p95": float(np.percentile(times, 95)),
            "runs": len(times),
            "warmup": int(spec["warmup"]),
        },
        "peak_memory_mb": max(0.0, ((peak or 0) - baseline) / 1024.0),
        "memory_method": method + "; RSS of a fresh subprocess, model load and runs included, runtime import excluded",
        "machine": machine(),
    }


def machine() -> dict[str, Any]:
    """CPU model and core count of this machine (from ``lscpu``/``/proc/cpuinfo`` on Linux)."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": name, "cores": os.cpu_count(), "os": platform.platform(terse=True)}


# -- cards -------------------------------------------------------------------------------------------------
def build_card(
    *,
    path: Path,
    fmt: str,
    status: str,
    task: str,
    model_info: Mapping[str, Any],
    inputs: Sequence[Mapping[str, Any]],
    outputs: Mapping[str, Any],
    parity: Mapping[str, Any],
    export_info: Mapping[str, Any] | None = None,
    runtime: Mapping[str, Any] | None = None,
    card_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The card as a JSON-able dict (see the module docstring for what it holds)."""
    info = dict(card_info or {})
    card: dict[str, Any] = {
        "name": path.name,
        "status": status,
        "format": fmt,
        "runtime": RUNTIMES.get(fmt, fmt),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "file": {"name": path.name, "size_bytes": path.stat().st_size, "sha256": sha256_file(path)},
        "task": task,
        "inputs": list(inputs),
        "input_contract": info.pop("input_contract", {}),
        "outputs": dict(outputs),
        "model": dict(model_info),
        "export": dict(export_info or {}),
        "measured": dict(runtime or {"skipped": "measurement not requested"}),
        "parity": dict(parity),
        "provenance": {k: info.pop(k) for k in ("run_dir", "teacher", "data", "metrics") if k in info},
        "intended_use": info.pop("intended_use", INTENDED_USE),
        "limitations": list(info.pop("limitations", LIMITATIONS)),
        "toolchain": toolchain_versions(),
    }
    if info:
        card["other"] = info
    return card


def toolchain_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {}
    for name in ("biokd", "torch", "onnx", "onnxscript", "onnxruntime", "executorch", "torchao"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return versions


def write_card(export_path: str | Path, card: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``<export>.card.json`` and ``<export>.card.md`` (atomically); return both paths."""
    export_path = Path(export_path)
    json_path = export_path.with_name(export_path.name + ".card.json")
    md_path = export_path.with_name(export_path.name + ".card.md")
    write_json(json_path, card)
    write_text(md_path, render_markdown(card))
    return json_path, md_path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple) and len(value) > 12:
        return ", ".join(map(str, value[:12])) + f", … ({len(value)} in all)"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def render_markdown(card: Mapping[str, Any]) -> str:
    """A human-readable card: the same facts as the JSON, in sections."""
    lines = [f"# Model card: {card['name']}", ""]
    lines += [f"**Status:** {card['status']} · **format:** {card['format']} · **runtime:** {card['runtime']}"]
    lines += [f"· **task:** {card['task']} · created {card['created']}", ""]
    lines += ["## Intended use", "", str(card["intended_use"]), ""]
    lines += ["## Inputs", "", "| name | shape | dtype |", "|---|---|---|"]
    for spec in card["inputs"]:
        shape = "(" + ", ".join(map(str, spec["shape"])) + ")"
        lines.append(f"| `{spec['name']}` | {shape} | {spec['dtype']} |")
    if card.get("input_contract"):
        lines += ["", "Input contract:", ""]
        lines += [f"- **{k}**: {_fmt(v)}" for k, v in card["input_contract"].items()]
    lines += ["", "## Outputs", ""] + [f"- **{k}**: {_fmt(v)}" for k, v in card["outputs"].items()]
    size = card["file"]["size_bytes"]
    model = card["model"]
    lines += ["", "## Cost", "", f"- file size: {size:,} bytes ({size / 1e6:.3f} MB)"]
    if "parameters" in model:
        lines.append(f"- parameters: {model['parameters']:,}")
    if "flops" in model:
        lines.append(f"- FLOPs per window: {model['flops']:,} ({model.get('flops_convention', '')})")
    measured = card["measured"]
    if "latency_ms" in measured:
        lat = measured["latency_ms"]
        lines.append(
            f"- latency, one window, {measured['threads']} thread: p50 {lat['p50']:.3f} ms, p95 {lat['p95']:.3f} ms "
            f"({lat['runs']} runs after {lat['warmup']} warm-up)"
        )
        lines.append(f"- peak memory: {measured['peak_memory_mb']:.2f} MB ({measured['memory_method']})")
        lines.append(f"- machine: {_fmt(measured['machine'])}")
    else:
        lines.append(f"- latency and memory: {_fmt(measured)}")
    lines += ["", "## Parity with the PyTorch model", ""]
    lines += [f"- **{k}**: {_fmt(v)}" for k, v in card["parity"].items()]
    if card.get("export"):
        lines += ["", "## Export details", ""] + [f"- **{k}**: {_fmt(v)}" for k, v in card["export"].items()]
    if model:
        lines += ["", "## Model", ""] + [f"- **{k}**: {_fmt(v)}" for k, v in model.items()]
    if card.get("provenance"):
        lines += ["", "## Provenance", ""] + [f"- **{k}**: {_fmt(v)}" for k, v in card["provenance"].items()]
    lines += ["", "## Limitations", ""] + [f"- {item}" for item in card["limitations"]]
    lines += ["", "Toolchain: " + _fmt(card["toolchain"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
