"""``biokd export``: a run's student to ONNX / ONNX int8 / ExecuTorch, checked for parity, with a model card."""

from __future__ import annotations

from pathlib import Path

import typer

FORMAT_HELP = "onnx | onnx-int8 | executorch | executorch-int8"


def export(
    run_dir: Path = typer.Argument(
        ..., help="A run folder written by `biokd distill` (or train-teacher).", file_okay=False
    ),
    format: str = typer.Option("onnx", "--format", "-f", help=f"Export format: {FORMAT_HELP}."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output file (default RUN_DIR/export/student.<ext>)."),
    quantization: str = typer.Option(
        "auto", help="onnx-int8 only: auto (ORT's advice for the model's layers), dynamic or static."
    ),
    max_abs_diff: float = typer.Option(1e-4, help="fp32 parity: largest allowed |exported - PyTorch|."),
    min_agreement: float = typer.Option(0.95, help="int8 classification: least class agreement with PyTorch."),
    max_rmse_increase: float = typer.Option(0.05, help="int8 forecasting: largest relative RMSE increase."),
    max_forecast_diff: float = typer.Option(
        10.0, help="int8 forecasting: largest move of any single forecast vs PyTorch (output units, e.g. mg/dL)."
    ),
    n_heldout: int = typer.Option(128, help="Held-out windows for the parity check."),
    n_calibration: int = typer.Option(64, help="Training windows for int8 calibration."),
    split: str | None = typer.Option(None, help="Split for the parity check (default: the run's validation split)."),
    data_root: Path | None = typer.Option(None, help="The run's data folder, if it moved since training."),
    measure: bool = typer.Option(True, help="Measure single-thread latency and peak memory for the card."),
    int8_observer: str = typer.Option(
        "histogram", help="executorch-int8: activation ranges by 'histogram' (default) or 'minmax' (much faster)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the exporter libraries' own messages too."),
) -> None:
    """Export a run's student; exits non-zero (and keeps any earlier good file) if the parity check fails."""
    import contextlib

    from rich.console import Console

    from .._console import quiet_libraries
    from ..export import export_run
    from ..export.parity import Thresholds

    thresholds = Thresholds(
        fp32_max_abs=max_abs_diff,
        int8_class_agreement=min_agreement,
        int8_rmse_increase=max_rmse_increase,
        int8_forecast_max_abs=max_forecast_diff,
    )
    console = Console()
    waiting = (  # a spinner while the export, the parity check and the latency runs take their time
        console.status(f"exporting to {format}: build, parity check on held-out windows, latency", spinner="dots")
        if console.is_terminal
        else contextlib.nullcontext()
    )
    with waiting, quiet_libraries(not verbose):  # ExecuTorch's C++ logs, torchao's optional kernels, torch warnings
        result = export_run(
            run_dir,
            format,
            out,
            quantization=quantization,
            thresholds=thresholds,
            n_calibration=n_calibration,
            n_heldout=n_heldout,
            heldout_split=split,
            data_root=data_root,
            measure=measure,
            int8_observer=int8_observer,
        )
    console.print(f"wrote {result.path} ({result.path.stat().st_size:,} bytes)", markup=False, highlight=False)
    console.print(result.parity.summary(), highlight=False)
    lat = result.card["measured"].get("latency_ms")
    if lat:
        console.print(f"latency (1 thread): p50 {lat['p50']:.3f} ms, p95 {lat['p95']:.3f} ms", highlight=False)
    console.print(f"card: {result.card_paths[0]} and {result.card_paths[1].name}", markup=False, highlight=False)
