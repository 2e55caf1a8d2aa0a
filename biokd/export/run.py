"""Running an export: :func:`export_model` (any model) and :func:`export_run` (a trained run folder).

A run folder, as the trainer writes it, must hold (paths relative to the run folder):

* ``model.json``: ``{"class": "biokd.eeg.mic.MiC", "kwargs": {...}}``, the student's import path
  (inside the ``biokd`` package) and constructor kwargs;
* ``checkpoints/best.pt``: a weights-only dict whose ``"student"`` (or ``"model"``) entry is the
  student's ``state_dict``;
* ``config.yaml``: the resolved config, with ``data.root`` (a preprocessed folder) and optionally
  ``data.train_split`` / ``data.val_split`` / ``data.test_split`` (defaults train/val/test), ``task``
  (``classification`` or ``forecasting``; otherwise inferred from the data's ``protocol.json``) and
  ``teacher`` (recorded in the card);
* ``metrics.json`` (optional): its ``"student"`` entry (or the whole file) is quoted in the card.

Windows for calibration (training split) and for the parity check (validation split, else test) come from
``data.root`` (relative paths: to the run folder first) through a *sample provider*: the shared store's
:class:`biokd.data.reader.ShardDataset` unless :func:`register_sample_provider` names another for the
protocol's ``dataset``. The card's input contract (channels in order, sampling rate, window, units, scaling,
glucose step and horizons) is read from the same ``protocol.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import SUFFIXES, ExportError, ParityError, check_format, require_toolchain
from .parity import ParityReport, Thresholds, as_predictor, check_parity, predict, stack_targets

METADATA = ("subject", "session", "site", "index")
Sample = dict[str, np.ndarray]


@dataclass
class ExportResult:
    """A kept export: its path, parity report, model card and the card files beside it."""

    format: str
    path: Path
    parity: ParityReport
    card: dict[str, Any]
    card_paths: tuple[Path, Path]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.parity.passed


# -- exporting any model -----------------------------------------------------------------------------------
def export_model(
    model: Any,
    example_inputs: Any,
    fmt: str,
    out: str | Path,
    *,
    task: str = "classification",
    calibration: Sequence[Mapping[str, Any]] | None = None,
    heldout: Sequence[Mapping[str, Any]] | None = None,
    thresholds: Thresholds | None = None,
    card_info: Mapping[str, Any] | None = None,
    quantization: str = "auto",
    reference: Any = None,
    measure: bool = True,
    heldout_source: str | None = None,
    int8_observer: str = "histogram",
    accuracy_metrics: Callable[[Any, Any], Mapping[str, float]] | None = None,
    decision_logit: float = 0.0,
) -> ExportResult:
    """Export ``model`` to ``out`` in ``fmt``, check parity on ``heldout``, keep it only if it passes.

    ``example_inputs``: the model's inputs for one window, either a dict ``{input_key: array}`` without a
    batch dimension (like the items of :func:`sample_inputs`) or a tuple of batched tensors.
    ``calibration`` / ``heldout``: lists of such dicts; held-out items may carry ``label`` or ``target``
    (used by the int8 forecasting check). Without ``heldout``, 32 standard-normal windows are used (and the
    card says so). ``quantization``: ``auto`` (see :func:`biokd.export.onnx.choose_quantization`),
    ``dynamic`` or ``static`` for ``onnx-int8``. ``reference``: the PyTorch model to compare with (default
    ``model``). ``card_info``: extra card fields (``input_contract``, ``outputs``, ``teacher``, ``data``,
    ``metrics``, ``run_dir``). ``int8_observer``: ``histogram`` or ``minmax`` activation ranges for
    ``executorch-int8`` (see :func:`biokd.export.executorch.export_executorch`). ``accuracy_metrics(y, pred)``:
    task-specific figures added to the card's held-out accuracy (see :func:`biokd.export.card.accuracy_summary`).
    For int8 formats with ``measure``, the fp32 export is measured too, so the card sets both side by side.

    A passing export is renamed to ``out`` with ``out.card.json``/``out.card.md`` beside it; a failing one
    goes to ``out.failed`` (with its card) and :class:`~biokd.export.ParityError` is raised. Either way an
    earlier file at ``out`` is replaced only by an export that passed.
    """
    import torch

    from ..batch import input_keys

    check_format(fmt)
    require_toolchain(fmt)
    if task not in ("classification", "binary", "forecasting"):
        raise ExportError(f"task must be 'classification', 'binary' or 'forecasting'; got {task!r}")
    if quantization not in ("auto", "dynamic", "static"):
        raise ExportError(f"quantization must be 'auto', 'dynamic' or 'static'; got {quantization!r}")
    model = model.eval()
    names = input_keys(model)
    examples = _example_tensors(example_inputs, names)
    if heldout is None:
        heldout = _synthetic(examples, names)
        heldout_source = "synthetic standard-normal (no held-out windows given)"
    heldout_source = heldout_source or "held-out"
    out = check_out(out)
    precision = "int8" if fmt.endswith("int8") else "fp32"
    output_name = {"classification": "logits", "binary": "logit"}.get(task, "forecast")

    workdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    threads = torch.get_num_threads()
    # One torch thread: export, calibration and the PyTorch side of the parity check run small ops, which
    # several threads only slow down (tenfold on a busy 2-core machine).
    torch.set_num_threads(1)
    try:
        built = workdir / out.name
        info = _build(
            fmt, model, examples, built, workdir, names, output_name, calibration, quantization, int8_observer
        )
        exported = predict(_runtime_predictor(fmt, built), heldout, names)
        with torch.no_grad():
            expected = predict(as_predictor(reference if reference is not None else model), heldout, names)
        report = check_parity(
            expected,
            exported,
            fmt=fmt,
            precision=precision,
            task=task,  # type: ignore[arg-type]
            thresholds=thresholds,
            targets=stack_targets(heldout, task),  # type: ignore[arg-type]
            source=heldout_source,
            decision_logit=decision_logit,
        )
        # The card is made on the built file before anything is published, then the pair is published with no
        # moment where a card sits beside a file it does not describe: the old card goes first, the new one
        # comes last, and read_card checks the pair (sha256) on read.
        final = out if report.passed else out.with_name(out.name + ".failed")
        staged = workdir / final.name
        os.replace(built, staged)
        targets = stack_targets(heldout, task)  # type: ignore[arg-type]
        extras: dict[str, Any] = {}
        if targets is not None:
            from .card import accuracy_summary

            extras["accuracy"] = accuracy_summary(
                task, targets, expected, exported, source=heldout_source, extra_metrics=accuracy_metrics
            )
        fields = _card(
            staged, fmt, report, task, model, examples, names, output_name, expected.shape[-1], info, card_info, measure
        )
        if precision == "int8" and measure and report.passed:
            extras["latency"] = _fp32_vs_int8(fmt, model, examples, workdir, staged, fields["runtime"])
        from .card import build_card

        card = build_card(**fields, **extras)  # on the staged file: same name, same bytes as the published one
        for stale in card_paths_of(final):
            stale.unlink(missing_ok=True)
        os.replace(staged, final)
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(workdir, ignore_errors=True)
    from .card import write_card

    card_paths = write_card(final, card)
    if not report.passed:
        raise ParityError(
            f"{report.summary()}. The export was written to {final} for inspection; "
            + (f"the earlier export at {out} is unchanged" if out.exists() else f"nothing was written at {out}"),
            report=report,
            failed_path=final,
        )
    return ExportResult(fmt, final, report, card, card_paths, info)


def check_out(out: str | Path, create: bool = True) -> Path:
    """An export path that can be written: not a folder, under a writable folder (made if ``create``)."""
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; --out names the exported file (e.g. {out / 'student.onnx'})")
    parent = next((p for p in out.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise ExportError(f"{parent}: is a file, so {out} cannot be written under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"{parent}: not writable, so {out} cannot be written there")
    if create:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ExportError(f"{out.parent}: cannot create the output folder ({err.strerror})") from None
    return out


def card_paths_of(export_path: str | Path) -> tuple[Path, Path]:
    """``<export>.card.json`` and ``<export>.card.md``."""
    export_path = Path(export_path)
    return export_path.with_name(export_path.name + ".card.json"), export_path.with_name(export_path.name + ".card.md")


def read_card(export_path: str | Path) -> dict[str, Any]:
    """The card of an export, checked against the file it sits beside (name, size and sha256)."""
    from .._io import sha256_file

    export_path = Path(export_path)
    json_path = card_paths_of(export_path)[0]
    if not export_path.is_file():
        raise ExportError(f"{export_path}: no such exported file")
    if not json_path.is_file():
        raise ExportError(f"{json_path}: missing; the export at {export_path} has no card (re-run the export)")
    card = _read_json(json_path)
    file = card.get("file") if isinstance(card, dict) else None
    if not isinstance(file, dict) or file.get("sha256") != sha256_file(export_path):
        raise ExportError(
            f"{json_path}: does not describe {export_path} (sha256 differs: the export was interrupted or one of "
            "the two was replaced); re-run the export"
        )
    return card


def _fp32_vs_int8(
    fmt: str, model: Any, examples: tuple[Any, ...], workdir: Path, int8_path: Path, int8_measured: Any
) -> dict[str, Any]:
    """The int8 file's latency beside its fp32 counterpart's (built for ONNX int8 anyway; lowered for ExecuTorch)."""
    from .card import latency_comparison, measure_runtime

    runtime = "onnxruntime" if fmt.startswith("onnx") else "executorch"
    fp32 = workdir / ("fp32.onnx" if fmt.startswith("onnx") else "fp32.pte")
    if not fp32.is_file():
        from .executorch import export_executorch

        export_executorch(model, examples, fp32, quantize=False)
    shapes = [[1, *x.shape[1:]] for x in examples]
    return latency_comparison(
        measure_runtime(runtime, shapes, path=fp32),
        int8_measured or measure_runtime(runtime, shapes, path=int8_path),
        fp32.stat().st_size,
        int8_path.stat().st_size,
        fmt.removesuffix("-int8"),
    )


def _runtime_predictor(fmt: str, path: Path) -> Any:
    """The exported file in its own runtime (one thread), whatever its file name."""
    if fmt.startswith("onnx"):
        from .onnx import OnnxPredictor

        return OnnxPredictor(path)
    from .executorch import ExecuTorchPredictor

    return ExecuTorchPredictor(path)


def _example_tensors(example_inputs: Any, names: Sequence[str]) -> tuple[Any, ...]:
    import torch

    if isinstance(example_inputs, Mapping):
        missing = [k for k in names if k not in example_inputs]
        if missing:
            raise ExportError(f"example inputs lack {missing}; the model reads {list(names)}")
        return tuple(torch.as_tensor(np.asarray(example_inputs[k], dtype=np.float32))[None] for k in names)
    if torch.is_tensor(example_inputs):
        example_inputs = (example_inputs,)
    tensors = tuple(torch.as_tensor(x, dtype=torch.float32) for x in example_inputs)
    if len(tensors) != len(names):
        raise ExportError(f"{len(tensors)} example inputs for a model that reads {list(names)}")
    return tuple(t[:1] for t in tensors)


def _synthetic(examples: tuple[Any, ...], names: Sequence[str], n: int = 32) -> list[Sample]:
    rng = np.random.default_rng(0)
    return [
        {k: rng.standard_normal(tuple(x.shape[1:])).astype(np.float32) for k, x in zip(names, examples, strict=True)}
        for _ in range(n)
    ]


def _batches(samples: Sequence[Mapping[str, Any]], names: Sequence[str], size: int) -> list[dict[str, np.ndarray]]:
    return [
        {k: np.stack([np.asarray(s[k], dtype=np.float32) for s in samples[i : i + size]]) for k in names}
        for i in range(0, len(samples), size)
    ]


def _build(
    fmt: str,
    model: Any,
    examples: tuple[Any, ...],
    path: Path,
    workdir: Path,
    names: Sequence[str],
    output_name: str,
    calibration: Sequence[Mapping[str, Any]] | None,
    quantization: str,
    int8_observer: str,
) -> dict[str, Any]:
    """Write the export of ``model`` in ``fmt`` at ``path``; return facts for the card."""
    import torch

    if fmt in ("onnx", "onnx-int8"):
        from .onnx import choose_quantization, export_onnx, onnx_operators, quantize_onnx

        fp32 = path if fmt == "onnx" else workdir / "fp32.onnx"
        export_onnx(model, examples, fp32, names, (output_name,))
        info: dict[str, Any] = {"exporter": "torch.onnx.export(dynamo=True)", "dynamic_axes": "batch (axis 0)"}
        if fmt == "onnx-int8":
            auto_method, auto_reason = choose_quantization(model)
            method = auto_method if quantization == "auto" else quantization
            reason = auto_reason if quantization == "auto" else f"set by the caller (automatic choice: {auto_method})"
            batches = _batches(calibration, names, 16) if calibration else None
            info["quantization"] = {**quantize_onnx(fp32, path, method, batches), "reason": reason}
            info["fp32_size_bytes"] = fp32.stat().st_size
        info["operators"] = onnx_operators(path)
        return info
    from .executorch import export_executorch

    calib = None
    if fmt == "executorch-int8" and calibration:
        calib = [tuple(torch.as_tensor(np.asarray(s[k], dtype=np.float32))[None] for k in names) for s in calibration]
    return export_executorch(
        model, examples, path, quantize=fmt == "executorch-int8", calibration=calib, observer=int8_observer
    )


def _card(
    path: Path,
    fmt: str,
    report: ParityReport,
    task: str,
    model: Any,
    examples: tuple[Any, ...],
    names: Sequence[str],
    output_name: str,
    n_outputs: int,
    info: dict[str, Any],
    card_info: Mapping[str, Any] | None,
    measure: bool,
) -> dict[str, Any]:
    """The keyword arguments of :func:`biokd.export.card.build_card` for this export (runtime measured)."""
    from .card import measure_runtime

    batch: Any = "batch" if fmt.startswith("onnx") else 1
    inputs = [
        {"name": n, "shape": [batch, *map(int, x.shape[1:])], "dtype": "float32"}
        for n, x in zip(names, examples, strict=True)
    ]
    extra = dict(card_info or {})
    outputs = {"name": output_name, "shape": [batch, int(n_outputs)], "dtype": "float32", **extra.pop("outputs", {})}
    runtime = None
    if measure and report.passed:
        runtime = measure_runtime(
            "onnxruntime" if fmt.startswith("onnx") else "executorch",
            [[1, *x.shape[1:]] for x in examples],
            path=path,
        )
    elif not report.passed:
        runtime = {"skipped": "the export failed its parity check"}
    return dict(
        path=path,
        fmt=fmt,
        status="passed" if report.passed else "failed parity check",
        task=task,
        model_info=_model_info(model, examples),
        inputs=inputs,
        outputs=outputs,
        parity=report.to_dict(),
        export_info=info,
        runtime=runtime,
        card_info=extra,
    )


def _model_info(model: Any, examples: tuple[Any, ...]) -> dict[str, Any]:
    cls = type(model)
    info: dict[str, Any] = {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "kwargs": dict(getattr(model, "config", {})),
    }
    try:
        from ..profiling import count_flops, count_parameters

        info["parameters"] = count_parameters(model)
        info["flops"] = count_flops(model, examples)
    except ImportError:  # profiling not available: torch's own counter
        from torch.utils.flop_counter import FlopCounterMode

        info["parameters"] = sum(p.numel() for p in model.parameters())
        counter = FlopCounterMode(display=False)
        with counter:
            model(*examples)
        info["flops"] = int(counter.get_total_flops())
    info["flops_convention"] = "2 x multiply-accumulates, one window"
    return info


# -- run folders -------------------------------------------------------------------------------------------
Provider = Callable[[Path, str, Mapping[str, Any]], Any]
_PROVIDERS: dict[str, Provider] = {}


def register_sample_provider(dataset: str, provider: Provider) -> None:
    """Read windows of data folders whose ``protocol.json`` has ``"dataset": dataset`` with ``provider``.

    ``provider(root, split, protocol)`` returns a sequence (``len`` and indexing) of dicts holding the
    model's input keys (arrays or tensors without a batch dimension) and ``label`` or ``target``.
    """
    _PROVIDERS[dataset] = provider


def _store(root: Path, split: str, protocol: Mapping[str, Any]) -> Any:
    from ..data.reader import ShardDataset

    return ShardDataset(root, split)


def _accuracy_metrics(protocol: Mapping[str, Any]) -> Any:
    """The dataset's card figures (e.g. Clarke zones of glucose forecasts), named by its target spec."""
    name = ((protocol.get("spec") or {}).get("target") or {}).get("metrics")
    from ..registry import EXPORT_METRICS, resolve

    return resolve(EXPORT_METRICS, name, "export metrics")() if name in EXPORT_METRICS else None


def _provider(protocol: Mapping[str, Any]) -> Provider:
    return _PROVIDERS.get(protocol.get("dataset", ""), _store)


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    from ..config import safe_load_yaml
    from ..errors import ConfigError

    try:
        data = safe_load_yaml(path.read_text()) or {}
    except (yaml.YAMLError, ConfigError, UnicodeDecodeError) as err:
        raise ExportError(f"{path}: not a readable YAML config ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a mapping at the top level")
    return data


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ExportError(f"{path}: not valid JSON ({err})") from err


def run_meta(run_dir: str | Path, data_root: str | Path | None = None) -> dict[str, Any]:
    """What :func:`export_run` reads from a run folder (config, model spec, data protocol, metrics, task)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run folder")
    spec_path = run_dir / "model.json"
    if not spec_path.is_file():
        raise ExportError(f"{spec_path}: missing; a run folder holds model.json (the student's class and kwargs)")
    spec = _read_json(spec_path)
    if (
        not isinstance(spec, dict)
        or not {"name", "class"} & spec.keys()
        or not isinstance(spec.get("kwargs", {}), dict)
    ):
        raise ExportError(f'{spec_path}: expected {{"class": "biokd.students....", "kwargs": {{...}}}}; got {spec!r}')
    config = _read_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else {}
    data_cfg = config.get("data") or {}
    root = Path(data_root) if data_root is not None else (Path(data_cfg["root"]) if data_cfg.get("root") else None)
    if root is not None and not root.is_absolute() and (run_dir / root / "protocol.json").is_file():
        root = run_dir / root  # run folders may name their data relative to themselves
    protocol: dict[str, Any] = {}
    if root is not None and (root / "protocol.json").is_file():
        protocol = _read_json(root / "protocol.json")
    task = config.get("task") or data_cfg.get("task")
    if task is None and isinstance(protocol.get("spec"), dict):
        kind = protocol["spec"].get("target", {}).get("kind")
        task = kind if kind in ("forecasting", "binary") else "classification" if kind else None
    if task is None:
        task = "forecasting" if "horizons" in protocol else "classification" if "class_names" in protocol else None
    metrics_path = run_dir / "metrics.json"
    return {
        "run_dir": run_dir,
        "spec": spec,
        "config": config,
        "data_root": root,
        "protocol": protocol,
        "task": task,
        "splits": {
            "train": data_cfg.get("train_split", "train"),
            "val": data_cfg.get("val_split", "val"),
            "test": data_cfg.get("test_split", "test"),
        },
        "metrics": _read_json(metrics_path) if metrics_path.is_file() else None,
    }


def load_student(run_dir: str | Path, data_root: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
    """The run's student with its best weights (eval mode) and the run's metadata (see :func:`run_meta`)."""
    from ..models import load_run_model

    meta = run_meta(run_dir, data_root)
    run_dir = meta["run_dir"]
    ckpt = run_dir / "checkpoints" / "best.pt"
    if not ckpt.is_file():
        raise ExportError(
            f"{ckpt}: missing student checkpoint (the trainer writes it at the best epoch); nothing exported"
        )
    model = load_run_model(run_dir, meta["spec"])
    meta["checkpoint"] = ckpt
    return model, meta


def sample_inputs(
    run_dir: str | Path, split: str, n: int, *, seed: int = 0, data_root: str | Path | None = None
) -> list[Sample]:
    """``n`` windows (or all, if fewer) of ``split`` of the run's data, as dicts of numpy arrays.

    Items hold the input keys plus ``label``/``target`` where the data has them; metadata is dropped. The
    choice is random but fixed by ``seed``, in data order.
    """
    meta = run_meta(run_dir, data_root)
    return _sample(meta, split, n, seed)


def _require_data(meta: Mapping[str, Any]) -> Path:
    """The run's data folder, or an error saying where it should have been named."""
    root = meta["data_root"]
    config = meta["run_dir"] / "config.yaml"
    if root is None:
        problem = "is missing" if not config.is_file() else "has no data.root"
        raise ExportError(
            f"{config} {problem}: the parity check and int8 calibration need the run's preprocessed data "
            "(pass data_root / --data-root)"
        )
    if not (root / "protocol.json").is_file():
        raise ExportError(f"{config} data.root = {root}: no protocol.json there (moved? pass data_root / --data-root)")
    return root


def _binary_threshold(meta: Mapping[str, Any]) -> float:
    """The decision threshold (probability) a binary run's report used: its student's, else 0.5."""
    metrics = meta.get("metrics") or {}
    for key in ("student", "model", "teacher"):
        value = metrics.get(key, {}).get("threshold") if isinstance(metrics.get(key), dict) else None
        if isinstance(value, int | float) and 0 < value < 1:
            return float(value)
    return 0.5


def _sample(meta: Mapping[str, Any], split: str, n: int, seed: int) -> list[Sample]:
    root = _require_data(meta)
    dataset = _provider(meta["protocol"])(root, split, meta["protocol"])
    if len(dataset) == 0:
        raise ExportError(f"{root / 'manifest.csv'}: no windows in split {split!r}")
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(dataset), size=min(n, len(dataset)), replace=False))
    return [_as_arrays(dataset[int(i)]) for i in picks]


def _as_arrays(item: Mapping[str, Any]) -> Sample:
    out: Sample = {}
    for key, value in item.items():
        if key in METADATA or isinstance(value, str):
            continue
        out[key] = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    return out


def run_card_info(meta: Mapping[str, Any], calibration_split: str | None, heldout_split: str) -> dict[str, Any]:
    """Card fields from a run: input contract, output meaning, teacher, data and metrics."""
    protocol = meta["protocol"]
    kwargs = meta["spec"].get("kwargs", {})
    keys = (
        "dataset", "signal_key", "ch_names", "channels", "channel_units", "units", "scale", "sfreq", "n_times",
        "history", "step_min", "reference", "l_freq", "h_freq", "notch", "tmin",
    )  # fmt: skip
    contract = {k: protocol[k] for k in keys if k in protocol}
    sfreq = protocol.get("sfreq", kwargs.get("sfreq"))
    n_times = protocol.get("n_times", kwargs.get("n_times"))
    if sfreq and n_times:
        contract.setdefault("sfreq", sfreq)
        contract.setdefault("n_times", n_times)
        contract["window_s"] = float(n_times) / float(sfreq)
    if "units" in protocol and "scale" in protocol:
        contract["scaling"] = f"input = signal in {protocol['units']} × {protocol['scale']}"
    if "history" in protocol and "step_min" in protocol:
        contract["window_min"] = int(protocol["history"]) * int(protocol["step_min"])
        contract["layout"] = "(channels, history): oldest slot first, the last slot is the forecast origin"
    if "ch_names" in contract or "channels" in contract:
        contract["channel_order"] = "as listed (input row i = channel i)"
    outputs: dict[str, Any] = {}
    if meta["task"] == "classification":
        outputs["meaning"] = "unnormalised class scores (logits); softmax gives probabilities, argmax the class"
        if "class_names" in protocol:
            outputs["class_names"] = list(protocol["class_names"])
    elif meta["task"] == "binary":
        outputs["meaning"] = "one logit; sigmoid gives the probability of the positive class"
        classes = protocol.get("spec", {}).get("target", {}).get("classes") or protocol.get("class_names")
        if classes:
            outputs["class_names"] = list(classes)
        threshold = _binary_threshold(meta)
        outputs["decision_threshold"] = threshold
        outputs["decision"] = f"positive when sigmoid(logit) >= {threshold:g} (chosen on validation data)"
    else:
        outputs["meaning"] = "forecast of CGM glucose at each horizon after the last input slot"
        for k in ("horizons", "horizon_min"):
            if k in protocol:
                outputs[k] = protocol[k]
        if protocol.get("channel_units"):
            outputs["units"] = f"{protocol['channel_units'][0]} (the units of the training targets)"
    from .card import provenance_warnings

    config = meta["config"]
    metrics = meta.get("metrics")
    quoted = metrics.get("student", metrics) if isinstance(metrics, dict) else None
    return {
        "input_contract": contract,
        "outputs": outputs,
        "run_dir": str(meta["run_dir"]),
        "teacher": config.get("teacher"),
        "data": {
            "root": str(meta["data_root"]) if meta["data_root"] else None,
            "dataset": protocol.get("dataset"),
            "calibration_split": calibration_split,
            "parity_split": heldout_split,
        },
        "metrics": _scalars(quoted) if quoted is not None else None,
        "warnings": provenance_warnings(config, metrics),
    }


def _scalars(obj: Any, depth: int = 2) -> Any:
    """Numbers, strings and short lists of a metrics dict (confusion matrices and curves left out)."""
    if isinstance(obj, dict):
        if depth == 0:
            return None
        kept = {k: _scalars(v, depth - 1) for k, v in obj.items()}
        return {k: v for k, v in kept.items() if v is not None}
    if isinstance(obj, int | float | str | bool):
        return obj
    if isinstance(obj, list) and len(obj) <= 4 and all(isinstance(v, int | float | None) for v in obj):
        return obj
    return None


def export_run(
    run_dir: str | Path,
    fmt: str,
    out: str | Path | None = None,
    *,
    quantization: str = "auto",
    thresholds: Thresholds | None = None,
    n_calibration: int = 64,
    n_heldout: int = 128,
    heldout_split: str | None = None,
    data_root: str | Path | None = None,
    measure: bool = True,
    int8_observer: str = "histogram",
) -> ExportResult:
    """Export the student of ``run_dir`` (default ``<run_dir>/export/student<suffix>``); see :func:`export_model`.

    Parity uses ``n_heldout`` windows of the validation split (``heldout_split`` to choose another);
    int8 calibration uses ``n_calibration`` windows of the training split.
    """
    check_format(fmt)
    if n_heldout < 1:
        raise ExportError(f"n_heldout (--n-heldout) must be at least 1; got {n_heldout}")
    if n_calibration < 1:
        raise ExportError(f"n_calibration (--n-calibration) must be at least 1; got {n_calibration}")
    out = check_out(out if out is not None else Path(run_dir) / "export" / f"student{SUFFIXES[fmt]}", create=False)
    require_toolchain(fmt)
    model, meta = load_student(run_dir, data_root)
    _require_data(meta)
    if meta["task"] not in ("classification", "binary", "forecasting"):
        raise ExportError(
            f"{meta['run_dir'] / 'config.yaml'}: cannot tell the task (set task: classification or forecasting)"
        )
    split = heldout_split or meta["splits"]["val"]
    heldout = _sample(meta, split, n_heldout, seed=0)
    method = quantization
    if fmt == "onnx-int8" and quantization == "auto":
        from .onnx import choose_quantization

        method = choose_quantization(model)[0]
    needs_calibration = fmt == "executorch-int8" or (fmt == "onnx-int8" and method == "static")
    calibration = _sample(meta, meta["splits"]["train"], n_calibration, seed=1) if needs_calibration else None
    return export_model(
        model,
        heldout[0],
        fmt,
        out,
        task=meta["task"],
        calibration=calibration,
        heldout=heldout,
        thresholds=thresholds,
        card_info=run_card_info(meta, meta["splits"]["train"] if calibration else None, split),
        quantization=quantization,
        measure=measure,
        heldout_source=f"held-out '{split}'",
        int8_observer=int8_observer,
        accuracy_metrics=_accuracy_metrics(meta["protocol"]),
        decision_logit=math.log(t / (1 - t)) if meta["task"] == "binary" and (t := _binary_threshold(meta)) else 0.0,
    )
