"""Parity of an exported model with its PyTorch original, measured in the exported model's own runtime.

Criteria (each threshold is a field of :class:`Thresholds`):

* **fp32** exports: ``max|Δ| ≤ fp32_max_abs + fp32_rel · max|reference|`` over all outputs of all held-out
  windows. Why 1e-4: an fp32 runtime sums in another order than PyTorch (GEMM blocking, fused LayerNorm, GELU
  and softmax kernels), a few ulps per operation (fp32 spacing is 1.2e-7 near 1). For logits of magnitude ≤ 10
  after tens of layers that stays within 1e-6–1e-5 (3e-8 to 2e-7 measured for biokd's students), so 1e-4 leaves a
  10× margin yet is about 1000× below what a wrong weight or a mistranslated operation gives (≥ 1e-2, and
  a class flip needs differences near the logit margin). The relative term (1e-5 of the largest output) only
  matters for outputs in physical units, e.g. glucose in mg/dL up to 400, where fp32 spacing alone is 3e-5.
* **int8 classification**: agreement of predicted classes (argmax) with the PyTorch model ≥
  ``int8_class_agreement`` (0.95). For a **binary** task (one logit) the predicted class is ``logit >
  decision_logit`` (the decision threshold as a logit; 0 = probability 0.5), not an argmax over one column.
* **int8 forecasting**: two limits, both must hold. (1) Relative RMSE increase against the targets,
  ``(RMSE_int8 − RMSE_fp32) / RMSE_fp32 ≤ int8_rmse_increase`` (5%), over the finite targets; without
  targets, the RMSE between int8 and PyTorch outputs relative to the RMS of the PyTorch outputs, against the
  same limit. (2) The worst single forecast: ``max|int8 − PyTorch| ≤ int8_forecast_max_abs`` (10, in the
  forecast's units: mg/dL for glucose). An average can hide one forecast that moved far (an int8 GlucoNet
  passed (1) while one forecast moved 15.3 mg/dL); 10 mg/dL is two thirds of the ±15 mg/dL that ISO
  15197:2013 allows a glucose meter below 100 mg/dL, so quantization alone may not spend a sensor's whole
  error budget.

Margins: each check records its ``margin`` (signed distance to the limit in the criterion's units, positive
inside) and ``margin_fraction`` (the margin as a share of the room the limit leaves: ``limit`` for "≤" limits,
``1 − limit`` for agreement). A check that passes with ``margin_fraction < narrow_fraction`` (0.2) passed
*narrowly* (0.953 agreement against 0.95 leaves 6% of the room), and the report and card say so.

Also here: :func:`as_predictor`, which turns a PyTorch module, an onnxruntime session, a ``.onnx``/``.pte``
path or a plain function into one callable ``predictor(*arrays) -> np.ndarray`` on batched inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Task = Literal["classification", "binary", "forecasting"]
Sample = Mapping[str, Any]


@dataclass
class Thresholds:
    """Pass limits of the parity check (see the module docstring for the reasoning)."""

    fp32_max_abs: float = 1e-4
    fp32_rel: float = 1e-5
    int8_class_agreement: float = 0.95
    int8_rmse_increase: float = 0.05
    int8_forecast_max_abs: float = 10.0
    narrow_fraction: float = 0.2

    def __post_init__(self) -> None:
        values = (self.fp32_max_abs, self.fp32_rel, self.int8_rmse_increase, self.int8_forecast_max_abs)
        if min(values) < 0 or not 0 <= self.narrow_fraction < 1:
            raise ValueError(f"thresholds must be >= 0 (narrow_fraction in [0, 1)): {self}")
        if not 0 <= self.int8_class_agreement <= 1:
            raise ValueError(f"int8_class_agreement must lie in [0, 1]; got {self.int8_class_agreement}")


@dataclass
class ParityReport:
    """Outcome of one parity check; ``value`` is compared with ``limit`` by ``criterion``."""

    format: str
    precision: str
    task: str
    n_windows: int
    source: str
    criterion: str
    value: float
    limit: float
    passed: bool
    max_abs_diff: float
    mean_abs_diff: float
    extra: dict[str, float] = field(default_factory=dict)
    #: Every check made (the first is the one named by ``criterion``/``value``/``limit``); see :class:`Check`.
    checks: list[dict[str, Any]] = field(default_factory=list)
    margin: float = math.nan
    margin_fraction: float = math.nan
    #: ``passed``, ``passed narrowly`` (a check passed within ``narrow_fraction`` of its limit) or ``FAILED``.
    verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = f"{self.format} parity {self.verdict or ('passed' if self.passed else 'FAILED')}: "
        text += (
            "; ".join(_check_text(c) for c in self.checks)
            if self.checks
            else (f"{self.criterion} = {self.value:.4g} (limit {self.limit:.4g})")
        )
        text += f" on {self.n_windows} {self.source} windows; max|Δ| = {self.max_abs_diff:.3g}"
        if not self.passed:
            text += f"; {self.shortfall()}"
        return text

    def shortfall(self) -> str:
        """How far the (first) failed check missed its limit, in words."""
        failed = next((c for c in self.checks if not c["passed"]), None)
        if failed:
            criterion, value, limit = failed["criterion"], failed["value"], failed["limit"]
        else:
            criterion, value, limit = self.criterion, self.value, self.limit
        if criterion.startswith("class agreement"):
            return f"agreement is {100 * (limit - value):.1f} percentage points below the limit"
        if limit > 0 and math.isfinite(value):
            return f"{criterion}: {value / limit:.3g}× the limit"
        return f"{criterion}: value {value} against limit {limit}"


@dataclass
class Check:
    """One limit: ``value`` against ``limit``, ``higher_is_better`` for agreement-style criteria."""

    criterion: str
    value: float
    limit: float
    higher_is_better: bool = False

    def evaluate(self, narrow_fraction: float) -> dict[str, Any]:
        if self.higher_is_better:
            margin, room = self.value - self.limit, 1.0 - self.limit
        else:
            margin, room = self.limit - self.value, self.limit
        passed = bool(margin >= 0) if math.isfinite(self.value) else False
        fraction = margin / room if room > 0 and math.isfinite(margin) else (1.0 if margin >= 0 else -1.0)
        return {
            "criterion": self.criterion,
            "value": self.value,
            "limit": self.limit,
            "direction": "≥" if self.higher_is_better else "≤",
            "passed": passed,
            "margin": margin,
            "margin_fraction": fraction,
            "narrow": passed and fraction < narrow_fraction,
        }


def _check_text(check: Mapping[str, Any]) -> str:
    text = f"{check['criterion']} = {check['value']:.4g} ({check['direction']} {check['limit']:.4g}"
    if check["narrow"]:
        text += f", passed by a hair: margin {check['margin']:.3g}"
    return text + ")"


def _report(checks: Sequence[Check], th: Thresholds, extra: dict[str, Any], **common: Any) -> ParityReport:
    done = [c.evaluate(th.narrow_fraction) for c in checks]
    passed = all(c["passed"] for c in done)
    verdict = "FAILED" if not passed else "passed narrowly" if any(c["narrow"] for c in done) else "passed"
    first = done[0]
    return ParityReport(
        criterion=first["criterion"],
        value=first["value"],
        limit=first["limit"],
        passed=passed,
        extra=extra,
        checks=done,
        margin=first["margin"],
        margin_fraction=first["margin_fraction"],
        verdict=verdict,
        **common,
    )


def check_parity(
    reference: np.ndarray,
    exported: np.ndarray,
    *,
    fmt: str,
    precision: Literal["fp32", "int8"],
    task: Task,
    thresholds: Thresholds | None = None,
    targets: np.ndarray | None = None,
    source: str = "held-out",
    decision_logit: float = 0.0,
) -> ParityReport:
    """Compare outputs ``exported`` with ``reference`` (both ``(N, K)``) by the criterion for ``precision``."""
    th = thresholds or Thresholds()
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(exported, dtype=np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"output shapes differ: PyTorch {ref.shape}, {fmt} {out.shape}")
    diff = np.abs(out - ref)
    max_abs = float(np.nanmax(diff)) if diff.size else 0.0
    if not np.all(np.isfinite(out)):
        max_abs = math.inf
    common = dict(
        format=fmt,
        precision=precision,
        task=task,
        n_windows=int(ref.shape[0]),
        source=source,
        max_abs_diff=max_abs,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
    )
    extra: dict[str, float] = {}
    if task == "classification":
        agreement = float(np.mean(out.argmax(-1) == ref.argmax(-1))) if len(ref) else 1.0
        extra["class_agreement"] = agreement
    elif task == "binary":
        same = (out.reshape(len(out), -1)[:, 0] > decision_logit) == (ref.reshape(len(ref), -1)[:, 0] > decision_logit)
        extra["class_agreement"] = float(np.mean(same)) if len(ref) else 1.0
        extra["decision_logit"] = float(decision_logit)
    if precision == "fp32":
        limit = th.fp32_max_abs + th.fp32_rel * float(np.abs(ref).max(initial=0.0))
        return _report([Check("max|Δ| vs PyTorch", max_abs, limit)], th, extra, **common)
    if task in ("classification", "binary"):
        check = Check("class agreement with PyTorch", extra["class_agreement"], th.int8_class_agreement, True)
        return _report([check], th, extra, **common)
    value, extra = _rmse_increase(ref, out, targets)
    checks = [
        Check(str(extra.pop("criterion_text", "relative RMSE increase")), value, th.int8_rmse_increase),
        Check("worst single forecast, max|Δ| vs PyTorch", max_abs, th.int8_forecast_max_abs),
    ]
    return _report(checks, th, extra, **common)


def _rmse_increase(ref: np.ndarray, out: np.ndarray, targets: np.ndarray | None) -> tuple[float, dict[str, Any]]:
    if targets is not None:
        y = np.asarray(targets, dtype=np.float64).reshape(ref.shape)
        mask = np.isfinite(y)
        if mask.any():
            rmse_ref = float(np.sqrt(np.mean((ref[mask] - y[mask]) ** 2)))
            rmse_out = float(np.sqrt(np.mean((out[mask] - y[mask]) ** 2)))
            value = (rmse_out - rmse_ref) / rmse_ref if rmse_ref > 0 else (0.0 if rmse_out == 0 else math.inf)
            return value, {
                "criterion_text": "relative RMSE increase vs targets",
                "rmse_pytorch": rmse_ref,
                "rmse_exported": rmse_out,
                "n_targets": int(mask.sum()),
            }
    rms = float(np.sqrt(np.mean(ref**2)))
    rmse = float(np.sqrt(np.mean((out - ref) ** 2)))
    value = rmse / rms if rms > 0 else (0.0 if rmse == 0 else math.inf)
    return value, {"criterion_text": "RMSE vs PyTorch / RMS(PyTorch)", "rmse_vs_pytorch": rmse, "rms_pytorch": rms}


# -- predictors: one calling convention for PyTorch, onnxruntime and ExecuTorch --------------------------------
Predictor = Callable[..., np.ndarray]


class TorchPredictor:
    """A PyTorch model as ``predictor(*arrays) -> np.ndarray`` (eval mode, no gradients)."""

    def __init__(self, model: Any):
        from ..batch import input_keys

        self.model = model.eval()
        self.input_names = input_keys(model)

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(*(torch.as_tensor(np.ascontiguousarray(a)) for a in arrays))
        return out.detach().cpu().numpy()


class FunctionPredictor:
    def __init__(self, fn: Callable[..., Any], input_names: Sequence[str]):
        self.fn, self.input_names = fn, tuple(input_names)

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(*arrays))


def as_predictor(obj: Any, input_names: Sequence[str] | None = None) -> Any:
    """A callable on batched numpy inputs from a model, session, exported file path or function."""
    if hasattr(obj, "input_names") and callable(obj) and not _is_module(obj):
        return obj
    if _is_module(obj):
        return TorchPredictor(obj)
    if isinstance(obj, str | Path):
        path = Path(obj)
        if path.suffix == ".onnx":
            from .onnx import OnnxPredictor

            return OnnxPredictor(path)
        if path.suffix == ".pte":
            from .executorch import ExecuTorchPredictor

            return ExecuTorchPredictor(path)
        raise ValueError(f"{path}: cannot tell the runtime from the suffix (expected .onnx or .pte)")
    if type(obj).__name__ == "InferenceSession":
        from .onnx import OnnxPredictor

        return OnnxPredictor(obj)
    if callable(obj):
        if input_names is None:
            raise ValueError("a plain function needs input_names")
        return FunctionPredictor(obj, input_names)
    raise TypeError(f"cannot run {type(obj).__name__}: give an nn.Module, an onnxruntime session or a file path")


def _is_module(obj: Any) -> bool:
    try:
        from torch import nn
    except ImportError:  # pragma: no cover - torch is a core dependency
        return False
    return isinstance(obj, nn.Module)


def predict(predictor: Any, samples: Sequence[Sample], input_names: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Outputs of ``predictor`` on single-window ``samples`` (dicts without a batch dimension), stacked."""
    outputs = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        arrays = [np.stack([np.asarray(s[k], dtype=np.float32) for s in chunk]) for k in input_names]
        outputs.append(np.asarray(predictor(*arrays)))
    return np.concatenate(outputs) if outputs else np.zeros((0,))


def stack_targets(samples: Sequence[Sample], task: Task) -> np.ndarray | None:
    """Targets of ``samples`` (``label`` for classification, ``target`` for forecasting) or None."""
    key = "target" if task == "forecasting" else "label"
    if not samples or any(key not in s for s in samples):
        return None
    return np.stack([np.asarray(s[key], dtype=np.float64) for s in samples])
