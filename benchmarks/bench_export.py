"""Cost of the exported students: file size, single-thread latency and peak memory per runtime.

For MiC at PhysioNet-MI size (64 ch × 800 samples, 4 classes), MiC at FACED size (32 ch × 2000, 9 classes,
the default ≈1.25 M parameters) and GlucoNet (defaults: 6 × 36 slots, 2 horizons): PyTorch eager, ONNX fp32,
ONNX int8 (dynamic and static QDQ), ExecuTorch/XNNPACK fp32 and int8. Each latency/memory figure comes from
a fresh subprocess (``biokd.export.card.measure_runtime``: one thread, one window, warm-up then timed runs;
peak memory = RSS high-water-mark growth after the runtime import). Weights are random (cost does not
depend on them); parity against PyTorch is shown on synthetic inputs for reference only (the export
command checks parity on held-out data).

    python benchmarks/bench_export.py                       # everything (ExecuTorch lowering is slow)
    python benchmarks/bench_export.py --models gluconet --formats onnx,onnx-int8
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biokd.eeg.mic import MiC
from biokd.export.card import measure_runtime
from biokd.export.executorch import ExecuTorchPredictor, export_executorch
from biokd.export.onnx import OnnxPredictor, export_onnx, quantize_onnx
from biokd.glucose.gluconet import GlucoNet
from biokd.models import model_spec
from biokd.profiling import count_flops, count_parameters

MODELS = {
    "mic-physionet": (MiC, {"n_chans": 64, "n_times": 800, "n_outputs": 4}),
    "mic-faced": (MiC, {"n_chans": 32, "n_times": 2000, "n_outputs": 9}),
    "gluconet": (GlucoNet, {}),
    # not run by default: the in-graph VMD (30 sweeps) dominates GlucoNet's graph; this shows the lever
    "gluconet-vmd5": (GlucoNet, {"vmd_iter": 5}),
}
DEFAULT_MODELS = ("mic-physionet", "mic-faced", "gluconet")
FORMATS = ("eager", "onnx", "onnx-int8-dynamic", "onnx-int8-static", "executorch", "executorch-int8")


def _inputs(name: str, model: Any, n: int, rng: np.random.Generator) -> np.ndarray:
    """Plausible windows: EEG in CBraMod units (100 µV), glucose channels in their raw units."""
    if name.startswith("mic"):
        return (0.3 * rng.standard_normal((n, model.n_chans, model.n_times))).astype(np.float32)
    t = model.config["n_times"]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    x = np.zeros((n, 6, t), np.float32)
    x[:, 0] = 140 + 50 * np.sin(phase + np.arange(t) / 20) + rng.normal(0, 5, (n, t))
    x[:, 1] = 1.0
    x[:, 2] = rng.exponential(0.1, (n, t))
    x[:, 3] = (rng.uniform(size=(n, t)) < 0.02) * rng.uniform(10, 60, (n, t))
    x[:, 4] = rng.uniform(0, 3, (n, 1))
    x[:, 5] = rng.uniform(0, 40, (n, 1))
    return x


def _parity(name: str, fmt: str, reference: np.ndarray, out: np.ndarray) -> str:
    diff = float(np.abs(out - reference).max())
    if name.startswith("mic") and "int8" in fmt:
        return f"max|Δ| {diff:.2g}, class agreement {np.mean(out.argmax(1) == reference.argmax(1)):.3f}"
    if "int8" in fmt:
        return f"max|Δ| {diff:.2g} mg/dL, RMSE vs fp32 {np.sqrt(np.mean((out - reference) ** 2)):.2f} mg/dL"
    return f"max|Δ| {diff:.2g}"


def bench_model(name: str, formats: list[str], work: Path, observer: str = "histogram") -> list[dict[str, Any]]:
    cls, kwargs = MODELS[name]
    torch.manual_seed(0)
    model = cls(**kwargs).eval()
    rng = np.random.default_rng(0)
    test = _inputs(name, model, 32, rng)
    calib = _inputs(name, model, 32, rng)
    with torch.no_grad():
        reference = model(torch.from_numpy(test)).numpy()
    shape = [1, *test.shape[1:]]
    base = {
        "model": name,
        "parameters": count_parameters(model),
        "mflops": count_flops(model, torch.from_numpy(test[:1])) / 1e6,
    }
    rows = []
    fp32_onnx = work / f"{name}.onnx"
    for fmt in formats:
        tic = time.perf_counter()
        row: dict[str, Any] = {**base, "format": fmt}
        try:
            if fmt == "eager":
                path = work / f"{name}.pt"
                torch.save(model.state_dict(), path)
                measured = measure_runtime("torch", [shape], model_spec=model_spec(model))
                row["parity"] = "reference"
            elif fmt.startswith("onnx"):
                if not fp32_onnx.exists():
                    export_onnx(model, (torch.from_numpy(test[:2]),), fp32_onnx, model.input_keys, ("output",))
                path = fp32_onnx
                if fmt != "onnx":
                    method = fmt.rsplit("-", 1)[1]
                    path = work / f"{name}.{method}.onnx"
                    batches = [{model.input_keys[0]: calib[i : i + 16]} for i in range(0, len(calib), 16)]
                    row["quantization"] = quantize_onnx(fp32_onnx, path, method, batches)["method"]
                row["parity"] = _parity(name, fmt, reference, OnnxPredictor(path)(test))
                measured = measure_runtime("onnxruntime", [shape], path=path)
            else:
                path = work / f"{name}.{fmt}.pte"
                calibration = [(torch.from_numpy(calib[i : i + 1]),) for i in range(len(calib))]
                info = export_executorch(
                    model,
                    (torch.from_numpy(test[:1]),),
                    path,
                    quantize=fmt.endswith("int8"),
                    calibration=calibration,
                    observer=observer,
                )
                row["xnnpack_partitions"] = info["xnnpack_partitions"]
                row["parity"] = _parity(name, fmt, reference, ExecuTorchPredictor(path)(test))
                measured = measure_runtime("executorch", [shape], path=path)
            row["size_bytes"] = path.stat().st_size
            row.update(
                p50_ms=measured["latency_ms"]["p50"],
                p95_ms=measured["latency_ms"]["p95"],
                peak_mb=measured["peak_memory_mb"],
            )
        except Exception as err:  # report and go on with the other formats
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        row["export_s"] = time.perf_counter() - tic
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | params | MFLOPs | format | file size | p50 ms | p95 ms | peak MB | parity (synthetic inputs) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['parameters']:,} | {r['mflops']:.1f} | {r['format']} | — | — | — | — | "
                         f"failed: {r['error']} |")  # fmt: skip
            continue
        size = r["size_bytes"]
        size_text = f"{size / 1e6:.2f} MB" if size >= 1e6 else f"{size / 1e3:.1f} KB"
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {r['mflops']:.1f} | {r['format']} | {size_text} | "
            f"{r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['peak_mb']:.1f} | {r['parity']} |"
        )
    return "\n".join(lines)


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated: {', '.join(FORMATS)}")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--int8-observer", default="histogram", help="executorch-int8 activation observer")
    args = parser.parse_args()
    import os

    torch.set_num_threads(1)  # export and calibration run small ops; the measurements run in subprocesses
    print(f"machine: {_cpu()}, {os.cpu_count()} cores; torch {torch.__version__}", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="biokd-bench-export-") as tmp:
        for name in args.models.split(","):
            rows += bench_model(name, args.formats.split(","), Path(tmp), args.int8_observer)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": _cpu(), "command": " ".join(sys.argv), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
