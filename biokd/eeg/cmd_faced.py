"""``biokd preprocess faced``: FACED release folder → shard folder of 9-class emotion windows."""

from __future__ import annotations

from pathlib import Path

import typer

from ..commands._shared import (
    JOBS,
    OUT,
    QUIET,
    SCHEDULER,
    SET,
    run_preprocess,
)


def preprocess(
    root: Path = typer.Option(..., help="FACED release folder holding Processed_data/ (Recording_info.csv optional)."),
    out: Path = OUT,
    subjects: str | None = typer.Option(None, help="Subject indices, e.g. '0-9,15' (default: all listed and found)."),
    jobs: int = JOBS,
    skip_bad: bool = typer.Option(False, help="Skip missing, extra or damaged subjects; list them."),
    set_: list[str] = SET,
    scheduler: str | None = SCHEDULER,
    quiet: bool = QUIET,
) -> None:
    """Preprocess FACED into 10-s windows of 9 emotion classes (CBraMod's protocol by default)."""
    from .faced import FacedProtocol, preprocess_faced

    run_preprocess(
        FacedProtocol, preprocess_faced, "FACED", _notes, root, out, subjects, jobs, skip_bad, set_, scheduler, quiet
    )


def _notes(report: dict) -> list[str]:
    """Where the windows came from, and subjects whose amplitudes look like volts rather than µV."""
    lines = [f"read from {report['processed_dir']}/; subjects from {report['subject_list']}"]
    lines += [f"  check units {s}: {why}" for s, why in report["suspect_units"].items()]  # printed without markup
    return lines
