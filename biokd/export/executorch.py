"""ExecuTorch export lowered to XNNPACK (fp32 or PT2E int8) and a runner on the ExecuTorch Python runtime.

Path: ``torch.export.export`` (fixed shapes: one window, batch 1, as a wearable runs) →
``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])`` → ``to_executorch()`` → ``.pte``.
For int8: ``prepare_pt2e`` with the XNNPACK quantizer (symmetric, per-channel weights, static activations),
calibration on training windows, ``convert_pt2e``, then the same lowering; XNNPACK then runs the quantized
convolutions and linear layers in int8. Operations XNNPACK does not take stay in ExecuTorch's portable
kernels (listed in the returned info, so the card shows them).

An ``nn.LSTM`` is unrolled per time step during lowering: its sequence length is the window length, fixed
in the program (lowering time grows with it: about 1 s per step here).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import ExportError, unsupported_operation

TARGET = "ExecuTorch (XNNPACK)"


def export_executorch(
    model: Any,
    example_inputs: Sequence[Any],
    path: str | Path,
    *,
    quantize: bool = False,
    calibration: Sequence[Sequence[Any]] | None = None,
    observer: str = "histogram",
) -> dict[str, Any]:
    """Lower ``model`` to an XNNPACK ``.pte`` at ``path``; return facts for the model card.

    ``example_inputs``: tensors of one window with batch 1 (shapes are fixed in the program).
    ``calibration``: for ``quantize=True``, tuples of input tensors run through the observed model.
    ``observer``: activation-range observer for int8, ``histogram`` (the XNNPACK quantizer's default: ranges
    chosen to minimise quantization error, about 0.25 s per quantized activation at conversion) or
    ``minmax`` (the observed extremes; conversion in milliseconds, for graphs with hundreds of activations).
    """
    import torch
    from torch import nn

    model = contiguous_copy(model.eval())
    examples = tuple(x[:1] if hasattr(x, "shape") else x for x in example_inputs)
    info: dict[str, Any] = {"backend": "XNNPACK", "input_shapes": [list(x.shape) for x in examples], "notes": []}
    rnns = sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.RNNBase)})
    if rnns:
        info["notes"].append(
            f"{', '.join(rnns)} unrolled at lowering: the sequence length is fixed at the window length; "
            "inputs must have exactly the shapes above"
        )
    try:
        with torch.no_grad():
            program = torch.export.export(model, examples)
    except Exception as err:
        raise unsupported_operation(err, model, examples, f"{TARGET} (torch.export)") from err
    if quantize:
        program, coverage = _quantize_pt2e(model, program, examples, calibration, observer)
        info["quantization"] = coverage
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        info.update(_delegation(edge.exported_program()))
        buffer = edge.to_executorch().buffer
    except Exception as err:
        raise unsupported_operation(err, model, examples, TARGET) from err
    Path(path).write_bytes(buffer)
    return info


def contiguous_copy(model: Any) -> Any:
    """``model`` itself, or a copy whose non-contiguous buffers and parameters were made contiguous.

    ExecuTorch's constant dim-order pass refuses strided constants ("Missing input spec for lifted
    tensor ..."), e.g. a buffer built from a transposed numpy array.
    """
    import copy

    tensors = [*model.named_parameters(), *model.named_buffers()]
    if all(t.is_contiguous() for _, t in tensors):
        return model
    model = copy.deepcopy(model)
    for module in model.modules():
        for name, buf in list(module._buffers.items()):
            if buf is not None and not buf.is_contiguous():
                module._buffers[name] = buf.contiguous()
        for param in module.parameters(recurse=False):
            if not param.is_contiguous():
                param.data = param.data.contiguous()
    return model


def xnnpack_int8_config(observer: str = "histogram") -> Any:
    """The XNNPACK quantizer's symmetric per-channel config, its activation observer optionally min-max."""
    import dataclasses

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    config = get_symmetric_quantization_config(is_per_channel=True)
    if observer == "histogram":
        return config
    if observer != "minmax":
        raise ExportError(f"int8 observer must be 'histogram' or 'minmax'; got {observer!r}")
    from torchao.quantization.pt2e import MinMaxObserver

    act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    return dataclasses.replace(config, input_activation=act, output_activation=act)


def _quantize_pt2e(
    model: Any, program: Any, examples: tuple, calibration: Sequence[Sequence[Any]] | None, observer: str
) -> tuple:
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not calibration:
        raise ExportError("int8 ExecuTorch export needs calibration windows (none were given)")
    quantizer = XNNPACKQuantizer().set_global(xnnpack_int8_config(observer))
    try:
        observed = prepare_pt2e(program.module(), quantizer)
        with torch.no_grad():
            for inputs in calibration:
                observed(*inputs)
        converted = convert_pt2e(observed)
    except Exception as err:
        raise unsupported_operation(err, model, examples, "the XNNPACK quantizer (PT2E)") from err
    coverage = quantized_layers(converted)
    if not coverage["int8_layers"]:
        float_layers = ", ".join(coverage["float_layers"][:5]) or "none found"
        raise ExportError(
            f"the XNNPACK quantizer quantized no layer of {type(model).__name__} (float layers: {float_layers}); "
            "it takes convolutions, linear layers and matrix products: export this model in fp32 instead"
        )
    coverage.update(
        scheme="PT2E, XNNPACK quantizer: symmetric int8, per-channel weights, static per-tensor activations",
        activation_observer=observer,
        calibration_windows=sum(int(inputs[0].shape[0]) for inputs in calibration),
    )
    try:
        with torch.no_grad():
            return torch.export.export(converted, examples), coverage
    except Exception as err:
        raise unsupported_operation(err, model, examples, f"{TARGET} (torch.export of the int8 graph)") from err


_CONV_LINEAR = ("linear", "conv1d", "conv2d", "conv3d", "convolution")
_RNN = ("lstm", "gru", "rnn_tanh", "rnn_relu")
_PRODUCTS = ("matmul", "mm", "bmm", "addmm")


def _is_dequantize(node: Any) -> bool:
    return getattr(node, "op", None) == "call_function" and "dequantize" in str(node.target)


def _is_constant(node: Any) -> bool:
    if getattr(node, "op", None) == "get_attr":
        return True
    return _is_dequantize(node) and getattr(node.args[0], "op", None) == "get_attr"


def _weights(node: Any, kind: str) -> list[Any]:
    """The weight inputs of a weighted operation (empty for products of two activations)."""
    if kind in _CONV_LINEAR:
        return [node.args[1]] if len(node.args) > 1 else []
    if kind in _RNN:
        params = node.args[2] if len(node.args) > 2 and isinstance(node.args[2], list | tuple) else []
        return list(params)
    return [a for a in node.args if _is_constant(a)]


def quantized_layers(graph_module: Any) -> dict[str, list[str]]:
    """Which weighted layers of a converted PT2E graph read int8 weights and which keep float weights."""
    int8: list[str] = []
    float_: list[str] = []
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target).split(".")
        kind = name[-2] if len(name) >= 2 else ""
        if kind not in (*_CONV_LINEAR, *_RNN, *_PRODUCTS):
            continue
        weights = _weights(node, kind)
        if not weights:
            continue
        stack = node.meta.get("nn_module_stack") or {}
        layer = list(stack.values())[-1][0] if stack else node.name
        bucket = int8 if all(_is_dequantize(w) for w in weights) else float_
        label = f"{layer or '<root>'} ({kind})"
        if label not in bucket:
            bucket.append(label)
    return {"int8_layers": int8, "float_layers": [f for f in float_ if f not in int8]}


def _delegation(program: Any) -> dict[str, Any]:
    """Number of XNNPACK partitions and the operations left to ExecuTorch's portable kernels."""
    partitions = 0
    outside: dict[str, int] = {}
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        target = str(node.target)
        if "executorch_call_delegate" in target:
            partitions += 1
        elif "getitem" not in target:
            op = getattr(node.target, "__name__", target.split(":")[0])
            op = op.replace("<EdgeOpOverload: ", "").rstrip(">")
            outside[op] = outside.get(op, 0) + 1
    return {"xnnpack_partitions": partitions, "portable_ops": dict(sorted(outside.items()))}


# -- running ------------------------------------------------------------------------------------------------
class ExecuTorchPredictor:
    """A ``.pte`` program on the ExecuTorch Python runtime as ``predictor(*arrays)``.

    Programs have fixed shapes (batch 1): a batch is run one window at a time. ``threads`` sets the size of
    ExecuTorch's thread pool (XNNPACK), shared by the whole process.
    """

    def __init__(self, source: str | Path | bytes, threads: int | None = 1):
        from executorch.runtime import Runtime

        if threads is not None:
            set_threads(threads)
        program = Runtime.get().load_program(source if isinstance(source, bytes) else Path(source))
        self.method = program.load_method("forward")
        if self.method is None:  # pragma: no cover - every biokd program has a forward method
            raise ExportError(f"{source}: the ExecuTorch program has no 'forward' method")
        meta = self.method.metadata
        n_inputs = meta.num_inputs() if callable(meta.num_inputs) else meta.num_inputs
        self.input_names = tuple(f"input_{i}" for i in range(n_inputs))

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        import torch

        rows = len(arrays[0])
        outputs = []
        for i in range(rows):
            inputs = [torch.from_numpy(np.ascontiguousarray(a[i : i + 1], dtype=np.float32)) for a in arrays]
            outputs.append(self.method.execute(inputs)[0].numpy())
        return np.concatenate(outputs)


def set_threads(threads: int) -> None:
    """Size ExecuTorch's thread pool (used by XNNPACK); silently skipped where the runtime lacks the hook."""
    try:
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(int(threads))
    except (ImportError, AttributeError, RuntimeError):  # pragma: no cover - older runtimes
        pass
