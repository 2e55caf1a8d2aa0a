"""ONNX export (torch's dynamo exporter, dynamic batch) and int8 quantization with onnxruntime.

* :func:`export_onnx`: ``torch.onnx.export(dynamo=True)`` with ``dynamic_shapes`` built from
  ``torch.export.Dim`` on the batch axis of every input (the example batch is widened to 2: ``torch.export``
  specialises a size-1 dimension), per-node debug metadata stripped (it triples a small model's file), then
  ``onnx.checker.check_model(full_check=True)``; intermediate ``value_info`` shape annotations are dropped
  from the saved file (15% of GlucoNet's; runtimes infer shapes themselves).
* :func:`quantize_onnx`: ``quant_pre_process`` (shape inference and graph optimisation, as ORT advises), then
  ``quantize_dynamic`` (int8 weights, activations quantized at run time) or ``quantize_static`` (QDQ,
  per-channel int8 weights, activation ranges calibrated on windows of the training data).
* :func:`choose_quantization`: ORT's advice per model: dynamic for RNNs and transformers, static for CNNs.
* :class:`OnnxPredictor`: an onnxruntime session (one thread by default) as ``predictor(*arrays)``.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import ExportError, unsupported_operation

#: Upper bound of the dynamic batch dimension (torch.export needs a finite range to reason about shapes).
MAX_BATCH = 4096


def export_onnx(
    model: Any,
    example_inputs: Sequence[Any],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str] = ("output",),
    opset: int | None = None,
) -> Path:
    """Write ``model`` as ONNX to ``path`` with a dynamic batch dimension; return ``path``.

    Raises :class:`~biokd.export.UnsupportedOperationError` naming the operation (and layer) the exporter
    refused.
    """
    import onnx
    import torch

    model = model.eval()
    examples = tuple(_widen_batch(x) for x in example_inputs)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dynamic = tuple({0: batch} for _ in examples)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                examples,
                dynamo=True,
                dynamic_shapes=dynamic,
                input_names=list(input_names),
                output_names=list(output_names),
                opset_version=opset,
                verbose=False,
                optimize=True,
            )
    except Exception as err:
        raise unsupported_operation(err, model, examples, "the ONNX exporter (torch.onnx, dynamo)") from err
    if program is None:  # pragma: no cover - the dynamo path always returns a program
        raise ExportError("torch.onnx.export returned no program")
    proto = program.model_proto
    for node in proto.graph.node:
        del node.metadata_props[:]
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"the exported ONNX graph of {type(model).__name__} is invalid: {err}") from err
    # Intermediate shape annotations: a third of a small model's file, unused by runtimes (which infer shapes).
    del proto.graph.value_info[:]
    path = Path(path)
    onnx.save_model(proto, str(path))
    return path


def _widen_batch(x: Any) -> Any:
    if hasattr(x, "shape") and x.shape[0] == 1:
        return x.expand(2, *x.shape[1:]).clone()
    return x


# -- quantization ------------------------------------------------------------------------------------------
def choose_quantization(model: Any) -> tuple[str, str]:
    """``("dynamic" | "static", reason)`` following onnxruntime's advice for the layers ``model`` holds."""
    from torch import nn

    rnns = sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.RNNBase)})
    if rnns:
        return "dynamic", (
            f"the model contains {', '.join(rnns)}: onnxruntime advises dynamic quantization for RNNs, and its "
            "static QDQ path leaves LSTM/GRU nodes in float"
        )
    conv = sum(
        p.numel() for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd) for p in m.parameters(False)
    )
    dense = sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, nn.Linear | nn.MultiheadAttention | nn.Bilinear)
        for p in m.parameters(False)
    )
    total = conv + dense
    if total == 0:
        return "dynamic", "no convolution or linear layers found; dynamic quantization needs no calibration"
    if conv / total >= 0.5:
        return "static", (
            f"{100 * conv / total:.0f}% of the weights are in convolutions: onnxruntime advises static (QDQ) "
            "quantization for CNNs"
        )
    return "dynamic", (
        f"{100 * dense / total:.0f}% of the weights are in linear/attention layers (a transformer-style model): "
        "onnxruntime advises dynamic quantization for transformers"
    )


class _WindowReader:
    """Calibration batches for ``quantize_static`` (an ORT ``CalibrationDataReader``)."""

    def __init__(self, batches: Sequence[Mapping[str, np.ndarray]]):
        self._batches = list(batches)
        self._it: Iterator[Mapping[str, np.ndarray]] = iter(self._batches)

    def get_next(self) -> Mapping[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._batches)


def quantize_onnx(
    src: str | Path,
    dst: str | Path,
    method: str,
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
    per_channel: bool = True,
) -> dict[str, Any]:
    """Quantize fp32 ONNX ``src`` into ``dst``; return the settings used (for the model card).

    ``calibration``: batches ``{input_name: array (B, ...)}`` for ``method="static"``.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in ("dynamic", "static"):
        raise ExportError(f"ONNX quantization must be 'dynamic' or 'static'; got {method!r}")
    if method == "static" and not calibration:
        raise ExportError("static ONNX quantization needs calibration windows (none were given)")
    info: dict[str, Any] = {"method": method, "weights": "int8"}
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's quantizer logs one warning per LayerNorm weight on the root logger
    try:
        with tempfile.TemporaryDirectory(prefix="biokd-quant-") as tmp:
            renamed, pre = Path(tmp) / "renamed.onnx", Path(tmp) / "pre.onnx"
            _suffix_names(src, renamed)
            src = renamed
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
                info["pre_process"] = "quant_pre_process (symbolic shape inference, ORT graph optimisation)"
            except Exception as err:  # symbolic shape inference fails on some graphs; ONNX shape inference remains
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                info["pre_process"] = f"quant_pre_process without symbolic shape inference ({type(err).__name__})"
            if method == "dynamic":
                quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=False)
                info.update(activations="uint8, quantized at run time", per_channel=False)
            else:
                reader = _WindowReader(calibration or [])

                class _Reader(CalibrationDataReader):
                    def get_next(self) -> Any:
                        return reader.get_next()

                quantize_static(
                    str(pre),
                    str(dst),
                    _Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=per_channel,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                )
                n = sum(len(next(iter(b.values()))) for b in calibration or [])
                info.update(
                    activations="int8, ranges calibrated (min-max)",
                    per_channel=per_channel,
                    format="QDQ",
                    calibration_windows=n,
                )
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(f"onnxruntime {method} quantization of {src} failed: {type(err).__name__}: {err}") from err
    finally:
        root.setLevel(level)
    return info


def _suffix_names(src: str | Path, dst: str | Path) -> None:
    """Copy ``src`` with every internal tensor name ending in ``_`` (graph inputs and outputs kept).

    ORT's static quantizer gives the copies of an initializer shared by several nodes the original name
    plus a counter (``val_18`` → ``val_186``), which can collide with an existing tensor of the dynamo
    exporter's ``val_<n>`` names and produce a graph that does not load ("Incompatible dimensions"). Names
    that end in ``_`` cannot be hit that way.
    """
    import onnx

    model = onnx.load(str(src))
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}

    def rename(name: str) -> str:
        return name if name in keep else name + "_"

    for node in graph.node:
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for init in graph.initializer:
        init.name = rename(init.name)
    for info in graph.value_info:
        info.name = rename(info.name)
    onnx.save_model(model, str(dst))


# -- running ------------------------------------------------------------------------------------------------
class OnnxPredictor:
    """An onnxruntime CPU session as ``predictor(*arrays) -> outputs[0]``; ``threads`` intra-op threads."""

    def __init__(self, source: Any, threads: int = 1):
        import onnxruntime as ort

        if isinstance(source, str | Path):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.log_severity_level = 3
            self.session = ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
        else:
            self.session = source
        self.input_names = tuple(i.name for i in self.session.get_inputs())

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        feeds = {
            name: np.ascontiguousarray(a, dtype=np.float32) for name, a in zip(self.input_names, arrays, strict=True)
        }
        return self.session.run(None, feeds)[0]


def onnx_operators(path: str | Path) -> dict[str, int]:
    """Count of each operator type in an ONNX file (the card lists them: which ops run in int8)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
