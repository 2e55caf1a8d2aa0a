"""``biokd train-teacher``, ``biokd distill``, ``biokd evaluate``: YAML-driven runs with ``--set`` overrides."""

from __future__ import annotations

from pathlib import Path

import typer

CONFIG = typer.Argument(..., help="YAML config (see configs/).", exists=True, dir_okay=False)
OUT = typer.Option(..., "--out", "-o", help="Run folder: config, checkpoints, metrics and report go here.")
SET = typer.Option(None, "--set", help="Override a config key, e.g. --set train.epochs=5 (repeatable).")


def setup_logging(quiet: bool = False) -> None:
    import logging

    from rich.logging import RichHandler

    logger = logging.getLogger("biokd")
    if not logger.handlers:
        logger.addHandler(RichHandler(show_path=False, show_time=False, markup=False))
        logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def _load(config: Path, set_: list[str] | None, track: str | None = None, quiet: bool = False):
    from ..config import load_config
    from ..pipeline import RunConfig

    extra = ([f"train.track={track}"] if track else []) + (["train.progress=false"] if quiet else [])
    return load_config(RunConfig, config, [*(set_ or []), *extra])


RESTART = typer.Option(False, "--restart", help="Discard the checkpoints of a different run in --out and start anew.")
TRACK = typer.Option(
    None, "--track", help="Log the run to tensorboard (event files) or mlflow (a file store in --out): train.track."
)
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars, warnings only.")


def train_teacher(
    config: Path = CONFIG,
    out: Path = OUT,
    set_: list[str] = SET,
    restart: bool = RESTART,
    track: str | None = TRACK,
    quiet: bool = QUIET,
) -> None:
    """Fine-tune a teacher (e.g. CBraMod from its pretrained weights) on a preprocessed dataset."""
    from ..pipeline import train_teacher as run

    setup_logging(quiet)
    report = run(_load(config, set_, track, quiet), out, restart)
    _summary(out, {"teacher": report["teacher"]})


def distill(
    config: Path = CONFIG,
    out: Path = OUT,
    set_: list[str] = SET,
    restart: bool = RESTART,
    track: str | None = TRACK,
    quiet: bool = QUIET,
) -> None:
    """Distil a teacher into a student with the loss terms of the config (beside the student trained alone)."""
    from ..pipeline import distill as run

    setup_logging(quiet)
    metrics = run(_load(config, set_, track, quiet), out, restart)
    _summary(out, {k: v for k, v in metrics.items() if k == "teacher" or k.startswith("student (")})


def evaluate(
    run_dir: Path = typer.Argument(..., help="A run folder written by train-teacher or distill.", file_okay=False),
    split: str = typer.Option("test", help="Split of the run's data to score."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples (over subjects) for the CIs."),
    data_root: Path | None = typer.Option(None, help="The preprocessed data folder, if it moved since the run."),
) -> None:
    """Score a run's best model with the task's clinical metrics and write a report."""
    from ..pipeline import evaluate_run

    setup_logging()
    report = evaluate_run(run_dir, split, n_boot, data_root)
    _summary(run_dir, {"model": report}, stem=f"report-{split}")


def _summary(out: Path, reports: dict, stem: str = "report") -> None:
    from rich.console import Console

    from ..parallel import is_main

    if not is_main():  # one summary per torchrun
        return
    from rich.table import Table

    from ..report import ci_caption

    first = next(iter(reports.values()))
    metrics = [m for m in ("balanced_accuracy", "cohen_kappa", "auroc", "rmse", "mae") if m in first]
    table = Table("model", *metrics, "params", title=f"test set ({ci_caption(reports)})")
    for name, r in reports.items():
        cells = []
        for m in metrics:
            low, high = (r.get("ci") or {}).get(m, (None, None))
            value = r.get(m)
            text = "n/a" if value is None else f"{value:.3f}"
            cells.append(f"{text} [{low:.3f}, {high:.3f}]" if low is not None and value is not None else text)
        table.add_row(name, *cells, f"{r.get('model', {}).get('parameters', 0):,}")
    console = Console()
    console.print(table)
    console.print(f"report: {Path(out) / (stem + '.html')}", markup=False, highlight=False)
