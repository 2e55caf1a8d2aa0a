"""Model cards beside every export (``<file>.card.json`` and ``<file>.card.md``) and runtime measurements.

A card says what goes in (input names, shapes, dtype, channels in order, sampling rate, window, units and
scaling), what comes out (class names or forecast horizons), what the file costs (size, parameters, FLOPs,
single-thread latency p50/p95, peak memory; for int8 exports the fp32 export's latency and size beside it,
with a recommendation), how faithful it is (the parity figures, each check with its margin; a check passed
within a fifth of its room is said to have passed narrowly), how accurate it is on held-out windows before
and after export (the task's own metric: balanced accuracy; RMSE, MAE and the worst error for forecasts,
plus task extras such as Clarke zones), where it comes from (teacher, data, metrics, and the run's
provenance warnings, shown first) and what it is not for.

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
from collections.abc import Callable, Mapping, Sequence
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


# -- what the export costs in accuracy and time -------------------------------------------------------------
def accuracy_summary(
    task: str,
    targets: Any,
    reference: Any,
    exported: Any,
    *,
    source: str,
    extra_metrics: Callable[[Any, Any], Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Accuracy on held-out windows of the PyTorch model (before export/quantization) and of the export.

    Classification: balanced accuracy of the argmax. Forecasting: RMSE, MAE and the worst absolute error over
    all finite targets and horizons, then per horizon (``h0``, ``h1``, …). ``extra_metrics(y, pred)`` adds
    task-specific figures computed on the flattened finite pairs (e.g. Clarke zones for glucose); its
    optional ``units`` attribute names the forecast's units and ``agreement(y, reference, exported)`` how
    far the export's forecasts agree with the PyTorch model's.
    """
    import numpy as np

    y = np.asarray(targets)
    ref, out = np.asarray(reference, dtype=np.float64), np.asarray(exported, dtype=np.float64)
    result: dict[str, Any] = {"source": source, "n_windows": len(y)}
    if task == "classification":
        from sklearn.metrics import balanced_accuracy_score

        labels = y.astype(int).reshape(-1)
        result["metric"] = "balanced accuracy"
        result["pytorch"] = {"balanced_accuracy": float(balanced_accuracy_score(labels, ref.argmax(-1)))}
        result["exported"] = {"balanced_accuracy": float(balanced_accuracy_score(labels, out.argmax(-1)))}
        result["change"] = {
            "balanced_accuracy": result["exported"]["balanced_accuracy"] - result["pytorch"]["balanced_accuracy"]
        }
        return result
    y = y.astype(np.float64).reshape(ref.shape)
    units = getattr(extra_metrics, "units", "")
    result["metric"] = "RMSE, MAE, worst absolute error" + (f" ({units})" if units else "")

    def scores(pred: np.ndarray) -> dict[str, float]:
        mask = np.isfinite(y)
        err = pred[mask] - y[mask]
        row = {
            "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))),
            "max_abs_error": float(np.max(np.abs(err))),
        }
        for k in range(y.shape[1]):
            col = np.isfinite(y[:, k])
            row[f"rmse_h{k}"] = float(np.sqrt(np.mean((pred[col, k] - y[col, k]) ** 2)))
        if extra_metrics is not None:
            row.update(extra_metrics(y[mask], pred[mask]))
        return row

    result["pytorch"], result["exported"] = scores(ref), scores(out)
    result["change"] = {k: result["exported"][k] - result["pytorch"][k] for k in result["pytorch"]}
    if extra_metrics is not None and hasattr(extra_metrics, "agreement"):
        mask = np.isfinite(y)
        result["agreement"] = dict(extra_metrics.agreement(y[mask], ref[mask], out[mask]))  # type: ignore[attr-defined]
    return result


def latency_comparison(
    fp32: Mapping[str, Any], int8: Mapping[str, Any], fp32_size: int, int8_size: int, fp32_format: str
) -> dict[str, Any]:
    """fp32 and int8 latency and size side by side, with a recommendation for this machine."""
    if "latency_ms" not in fp32 or "latency_ms" not in int8:
        return {"skipped": "latency of both fp32 and int8 is needed", "fp32": dict(fp32), "int8": dict(int8)}
    a, b = float(fp32["latency_ms"]["p50"]), float(int8["latency_ms"]["p50"])
    speedup, shrink = a / b if b > 0 else float("inf"), fp32_size / int8_size if int8_size else float("inf")
    cpu = fp32.get("machine", {}).get("cpu", "this machine")
    size = (
        f"{shrink:.1f}x smaller"
        if shrink >= 1
        else f"{1 / shrink:.1f}x LARGER (quantization nodes outweigh the weights)"
    )
    if b > 1.05 * a:
        advice = (
            f"int8 is SLOWER than fp32 here ({b:.3f} vs {a:.3f} ms p50 on {cpu}): int8 kernels pay for "
            "quantizing activations and often lose to fp32 on x86 cores at this size. Use fp32 for speed on this "
            f"machine; the int8 file is {size}. Measure on the target device."
        )
    elif b < a / 1.05:
        advice = f"int8 is {speedup:.2f}x faster and its file {size} here: int8, if its accuracy is acceptable."
    else:
        advice = f"int8 and fp32 are level in speed here; the int8 file is {size}."
    if shrink < 1 and b >= a / 1.05:
        advice += " Nothing is gained by int8 for this model: use fp32."
    return {
        "fp32": {
            "format": fp32_format,
            "p50_ms": a,
            "p95_ms": float(fp32["latency_ms"]["p95"]),
            "size_bytes": fp32_size,
        },
        "int8": {"p50_ms": b, "p95_ms": float(int8["latency_ms"]["p95"]), "size_bytes": int8_size},
        "int8_speedup": speedup,
        "int8_size_ratio": shrink,
        "recommendation": advice,
    }


def provenance_warnings(config: Mapping[str, Any] | None, metrics: Any) -> list[str]:
    """The run's own caveats (config ``notes``, ``metrics.json`` ``notes``/``warnings``), de-duplicated, in order."""
    found: list[str] = []
    sources = [(config or {}).get("notes")]
    if isinstance(metrics, Mapping):
        sources += [metrics.get("notes"), metrics.get("warnings")]
        student = metrics.get("student")
        if isinstance(student, Mapping):
            sources += [student.get("notes"), student.get("warnings")]
    for entry in sources:
        items = [entry] if isinstance(entry, str) else entry if isinstance(entry, list | tuple) else []
        for item in items:
            if isinstance(item, str) and item.strip() and item.strip() not in found:
                found.append(item.strip())
    return found


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
    accuracy: Mapping[str, Any] | None = None,
    latency: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The card as a JSON-able dict (see the module docstring for what it holds)."""
    info = dict(card_info or {})
    warnings = list(info.pop("warnings", None) or [])
    if str(parity.get("source", "")).startswith("synthetic"):
        warnings.append("Parity and accuracy were checked on synthetic inputs, not on held-out data.")
    narrow = [c for c in parity.get("checks", []) if c.get("narrow")]
    for check in narrow:
        warnings.append(
            f"Parity passed by a hair: {check['criterion']} = {check['value']:.4g} against a limit of "
            f"{check['limit']:.4g} (margin {check['margin']:.3g})."
        )
    card: dict[str, Any] = {
        "name": path.name,
        "status": "passed narrowly" if status == "passed" and narrow else status,
        "warnings": warnings,
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
        "latency_fp32_vs_int8": dict(latency or {}),
        "accuracy": dict(accuracy or {"skipped": "no held-out targets"}),
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
    if isinstance(value, list | tuple):  # in full: a channel list cut short is an input contract broken
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def render_markdown(card: Mapping[str, Any]) -> str:
    """A human-readable card: the same facts as the JSON, in sections."""
    lines = [f"# Model card: {card['name']}", ""]
    lines += [f"**Status:** {card['status']} · **format:** {card['format']} · **runtime:** {card['runtime']}"]
    lines += [f"· **task:** {card['task']} · created {card['created']}", ""]
    for warning in card.get("warnings", []):
        lines += [f"> **Warning:** {warning}", ">"]
    if card.get("warnings"):
        lines[-1] = ""
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
    lines += _latency_lines(card.get("latency_fp32_vs_int8") or {})
    lines += _accuracy_lines(card.get("accuracy") or {})
    parity = dict(card["parity"])
    checks = parity.pop("checks", [])
    lines += ["", "## Parity with the PyTorch model", ""]
    if checks:
        lines += [
            f"Verdict: **{parity.get('verdict', '')}**",
            "",
            "| check | value | limit | margin | |",
            "|---|---|---|---|---|",
        ]
        for c in checks:
            word = "FAILED" if not c["passed"] else "passed by a hair" if c["narrow"] else "passed"
            lines.append(
                f"| {c['criterion']} | {c['value']:.4g} | {c['direction']} {c['limit']:.4g} | {c['margin']:.3g} "
                f"({100 * c['margin_fraction']:.0f}% of the room) | {word} |"
            )
        lines.append("")
    lines += [f"- **{k}**: {_fmt(v)}" for k, v in parity.items()]
    if card.get("export"):
        lines += ["", "## Export details", ""] + [f"- **{k}**: {_fmt(v)}" for k, v in card["export"].items()]
    if model:
        lines += ["", "## Model", ""] + [f"- **{k}**: {_fmt(v)}" for k, v in model.items()]
    if card.get("provenance"):
        lines += ["", "## Provenance", ""] + [f"- **{k}**: {_fmt(v)}" for k, v in card["provenance"].items()]
    lines += ["", "## Limitations", ""] + [f"- {item}" for item in card["limitations"]]
    lines += ["", "Toolchain: " + _fmt(card["toolchain"]), ""]
    return "\n".join(lines)


def _latency_lines(latency: Mapping[str, Any]) -> list[str]:
    if not latency or "fp32" not in latency or "p50_ms" not in latency.get("fp32", {}):
        return []
    a, b = latency["fp32"], latency["int8"]
    return [
        "",
        "## fp32 or int8",
        "",
        "| | p50 ms | p95 ms | file size |",
        "|---|---|---|---|",
        f"| fp32 ({a['format']}) | {a['p50_ms']:.3f} | {a['p95_ms']:.3f} | {a['size_bytes']:,} bytes |",
        f"| int8 (this file) | {b['p50_ms']:.3f} | {b['p95_ms']:.3f} | {b['size_bytes']:,} bytes |",
        "",
        f"**Recommendation:** {latency['recommendation']}",
    ]


def _accuracy_lines(accuracy: Mapping[str, Any]) -> list[str]:
    if "pytorch" not in accuracy:
        return ["", "## Accuracy", "", f"- {_fmt(accuracy)}"] if accuracy else []
    lines = ["", "## Accuracy on held-out windows", ""]
    lines += [f"{accuracy['metric']}, {accuracy['n_windows']} windows of {accuracy['source']}.", ""]
    lines += ["| metric | PyTorch (before export) | this export | change |", "|---|---|---|---|"]
    for key, before in accuracy["pytorch"].items():
        after, change = accuracy["exported"][key], accuracy["change"][key]
        lines.append(f"| {key} | {before:.4g} | {after:.4g} | {change:+.3g} |")
    if accuracy.get("agreement"):
        lines += [""] + [f"- **{k}**: {_fmt(v)}" for k, v in accuracy["agreement"].items()]
    return lines


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
