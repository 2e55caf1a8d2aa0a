"""Export students to wearable runtimes: ONNX (fp32, int8) and ExecuTorch/XNNPACK (fp32, int8).

Every export is checked before it is kept: the exported file runs in its own runtime (onnxruntime, the
ExecuTorch Python runtime) on held-out windows and is compared with the PyTorch student
(:mod:`biokd.export.parity`). It is written to a temporary name first; only an export that passes is renamed
to its final path, with a model card beside it (:mod:`biokd.export.card`). One that fails goes to
``<path>.failed`` and raises :class:`ParityError`, so a good export at the same path is never replaced by a
bad one.

Entry points (both in :mod:`biokd.export.run`): :func:`export_run` (a trained run folder) and
:func:`export_model` (any model following the contract of ``ARCHITECTURE.md``). Helpers:
:class:`~biokd.export.streaming.StreamingRunner` (window-by-window inference on a continuous signal) and
:class:`~biokd.export.dft.RFFT` / :class:`~biokd.export.dft.STFT` (exportable spectra).

This module imports only the standard library at the top; torch, onnx and executorch load when used.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._extras import missing_extra_message
from ..errors import BiokdError

if TYPE_CHECKING:
    from torch import nn

#: Export formats and what each needs installed (module, the package that provides it).
TOOLCHAINS: dict[str, tuple[tuple[str, str], ...]] = {
    "onnx": (("onnx", "onnx"), ("onnxscript", "onnxscript"), ("onnxruntime", "onnxruntime")),
    "onnx-int8": (
        ("onnx", "onnx"),
        ("onnxscript", "onnxscript"),
        ("onnxruntime", "onnxruntime"),
        ("onnxruntime.quantization", "onnxruntime"),
    ),
    "executorch": (
        ("executorch.exir", "executorch"),
        ("executorch.backends.xnnpack.partition.xnnpack_partitioner", "executorch"),
        ("executorch.runtime", "executorch"),
    ),
    "executorch-int8": (
        ("executorch.exir", "executorch"),
        ("executorch.backends.xnnpack.partition.xnnpack_partitioner", "executorch"),
        ("executorch.backends.xnnpack.quantizer.xnnpack_quantizer", "executorch"),
        ("torchao.quantization.pt2e.quantize_pt2e", "torchao"),
        ("executorch.runtime", "executorch"),
    ),
}
FORMATS: tuple[str, ...] = tuple(TOOLCHAINS)
#: File suffix of each format (``student`` + suffix is the default file name).
SUFFIXES = {"onnx": ".onnx", "onnx-int8": ".int8.onnx", "executorch": ".pte", "executorch-int8": ".int8.pte"}


class ExportError(BiokdError):
    """An export could not be made or did not pass its checks."""


class ToolchainMissingError(ExportError):
    """The libraries a format needs are not installed."""


class UnsupportedOperationError(ExportError):
    """The model holds an operation the target toolchain cannot take."""

    def __init__(self, message: str, op: str | None = None, layer: str | None = None, target: str = ""):
        super().__init__(message)
        self.op, self.layer, self.target = op, layer, target


class ParityError(ExportError):
    """The exported model's outputs differ from the PyTorch model's beyond the thresholds."""

    def __init__(self, message: str, report: Any = None, failed_path: Any = None):
        super().__init__(message)
        self.report, self.failed_path = report, failed_path


def check_format(fmt: str) -> str:
    if fmt not in TOOLCHAINS:
        import difflib

        close = difflib.get_close_matches(fmt, FORMATS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ExportError(f"unknown export format {fmt!r}.{hint} Formats: {', '.join(FORMATS)}")
    return fmt


def require_toolchain(fmt: str) -> None:
    """Import what ``fmt`` needs; a missing library raises :class:`ToolchainMissingError` naming the fix."""
    check_format(fmt)
    for module, package in TOOLCHAINS[fmt]:
        try:
            importlib.import_module(module)
        except ImportError as err:
            message = missing_extra_message(package, "export", f"export format {fmt!r}")
            raise ToolchainMissingError(f"{message} ({module} could not be imported: {err})") from err


# -- naming the operation (and layer) an exporter refused ----------------------------------------------------
_OP_PATTERNS = (
    re.compile(r"op='(?P<op>[\w.]+)', overload='(?P<overload>\w+)'"),
    re.compile(r"EdgeOpOverload: (?P<op>aten\.[\w]+)\.(?P<overload>\w+)"),
    re.compile(r"(?P<op>(?:aten|prims|quantized_decomposed)\.[A-Za-z_]\w*)(?:\.(?P<overload>[A-Za-z_]\w*))?"),
)
_HINTS = {
    "fft": "compute spectra with biokd.export.dft.RFFT / STFT (a fixed cos/sin matrix product) inside the model",
    "stft": "compute spectra with biokd.export.dft.STFT (windowed cos/sin convolution) inside the model",
    "lstm": "keep the sequence length fixed (windows have a fixed length) and export without a dynamic time axis",
    "gru": "keep the sequence length fixed (windows have a fixed length) and export without a dynamic time axis",
    "abs": "a complex-valued tensor probably reaches abs(): use biokd.export.dft.RFFT(n, output='magnitude')",
    "resample": "resample in preprocessing, outside the exported graph",
}


def find_operator(text: str) -> str | None:
    """The first ATen/prims operator named in an exporter's error message, e.g. ``aten.cummax``."""
    for pattern in _OP_PATTERNS:
        if m := pattern.search(text):
            return m.group("op")
    return None


def locate_operator(model: nn.Module, example_inputs: Sequence[Any], op: str) -> list[str]:
    """Module paths (``encoder.0.attn (Attention)``) whose forward calls ``op``, found by ``torch.export``.

    Returns an empty list when the model cannot be traced or the operation does not appear as such.
    """
    import torch

    base = op.split(".")[1] if "." in op else op
    try:
        ep = torch.export.export(model, tuple(example_inputs), strict=False)
    except Exception:  # tracing failed too: the caller reports the op alone
        return []
    for decompose in (False, True):  # the op as written, else as the exporter's decompositions produce it
        try:
            graph = ep.run_decompositions().graph if decompose else ep.graph
        except Exception:
            return []
        found: list[str] = []
        for node in graph.nodes:
            if node.op != "call_function":
                continue
            name = str(getattr(node.target, "__name__", node.target))
            if name.split(".")[0] != base and base not in str(node.target).split("."):
                continue
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path, cls = list(stack.values())[-1]
                cls_name = cls.rsplit(".", 1)[-1] if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
                label = f"{path or '<root>'} ({cls_name})"
            else:
                label = f"<root> ({type(model).__name__})"
            if label not in found:
                found.append(label)
        if found:
            return found
    return []


def unsupported_operation(
    err: BaseException, model: nn.Module, example_inputs: Sequence[Any], target: str
) -> UnsupportedOperationError:
    """Turn an exporter's exception into an error naming the operation, the layer and a way around it."""
    text = f"{type(err).__name__}: {err}"
    op = find_operator(text)
    layers = locate_operator(model, example_inputs, op) if op else []
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    summary = _exception_summary(str(err)) or first
    where = f" in layer {', '.join(layers[:3])}" if layers else ""
    what = f"operation {op}{where}" if op else "an operation of the model"
    hint = next((h for key, h in _HINTS.items() if op and key in op.lower()), None)
    message = f"{target} cannot take {what} of {type(model).__name__}: {summary}"
    if hint:
        message += f". Way around: {hint}"
    return UnsupportedOperationError(message, op=op, layer=layers[0] if layers else None, target=target)


def _exception_summary(text: str) -> str | None:
    """The one informative line of torch's long exporter messages (after '## Exception summary')."""
    clean = re.sub(r"\x1b\[[0-9;]*m", "", text)
    if "## Exception summary" in clean:
        rest = clean.split("## Exception summary", 1)[1]
        line = next((s.strip() for s in rest.splitlines() if s.strip()), "")
        return line[:400] or None
    return None


def __getattr__(name: str) -> Any:
    """Lazy access to the public API (keeps ``import biokd.export`` free of torch/onnx imports)."""
    lazy = {
        "export_model": "run",
        "ExportResult": "run",
        "export_run": "run",
        "load_student": "run",
        "sample_inputs": "run",
        "register_sample_provider": "run",
        "Thresholds": "parity",
        "ParityReport": "parity",
        "check_parity": "parity",
        "as_predictor": "parity",
        "StreamingRunner": "streaming",
        "offline_windows": "streaming",
        "RFFT": "dft",
        "STFT": "dft",
    }
    if name in lazy:
        module = importlib.import_module(f"{__name__}.{lazy[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FORMATS",
    "RFFT",
    "STFT",
    "ExportError",
    "ExportResult",
    "ParityError",
    "ParityReport",
    "StreamingRunner",
    "Thresholds",
    "ToolchainMissingError",
    "UnsupportedOperationError",
    "as_predictor",
    "check_parity",
    "export_model",
    "export_run",
    "load_student",
    "offline_windows",
    "register_sample_provider",
    "require_toolchain",
    "sample_inputs",
]
