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
    check_out_folder,
    parse_subjects,
    print_build_summary,
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
    from ..config import load_config
    from .faced import FacedProtocol, preprocess_faced

    protocol = load_config(FacedProtocol, None, set_)
    numbers = parse_subjects(subjects) if subjects else None
    check_out_folder(out)
    where = {"progress": not quiet, "scheduler": scheduler}
    preprocess_faced(root, out, numbers, protocol, jobs=jobs, skip_bad=skip_bad, **where)
    print_build_summary(out, "FACED", _notes)


def _notes(report: dict) -> list[str]:
    """Where the windows came from, and subjects whose amplitudes look like volts rather than µV."""
    lines = [f"read from {report['processed_dir']}/; subjects from {report['subject_list']}"]
    lines += [f"  check units {s}: {why}" for s, why in report["suspect_units"].items()]  # printed without markup
    return lines
