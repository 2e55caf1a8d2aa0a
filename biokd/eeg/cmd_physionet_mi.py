"""``biokd preprocess physionet-mi``: EEGMMIDB release folder → shard folder of motor-imagery windows."""

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
    root: Path = typer.Option(..., help="EEGMMIDB release folder holding S001/ … S109/ (files/eegmmidb/1.0.0)."),
    out: Path = OUT,
    subjects: str | None = typer.Option(None, help="Subject numbers, e.g. '1-10,12' (default: all found)."),
    jobs: int = JOBS,
    skip_bad: bool = typer.Option(False, help="Skip subjects with damaged or missing files; list them."),
    set_: list[str] = SET,
    scheduler: str | None = SCHEDULER,
    quiet: bool = QUIET,
) -> None:
    """Preprocess PhysioNet EEG Motor Movement/Imagery into 4-class windows (CBraMod's protocol by default)."""
    from .physionet_mi import PhysionetMIProtocol, preprocess_physionet_mi

    run_preprocess(
        PhysionetMIProtocol,
        preprocess_physionet_mi,
        "PhysioNet-MI",
        _notes,
        root,
        out,
        subjects,
        jobs,
        skip_bad,
        set_,
        scheduler,
        quiet,
    )


def _notes(report: dict) -> list[str]:
    """Subjects recorded at another rate, and windows lost at the end of a recording."""
    lines = []
    if report["resampled_from"]:
        listed = ", ".join(f"{s} ({f} Hz)" for s, f in report["resampled_from"].items())
        lines.append(f"recorded at a rate other than 160 Hz (resampled like the others): {listed}")
    if report["n_windows_past_end"]:
        lines.append(f"windows running past the end of a recording (not kept): {report['n_windows_past_end']}")
    if report.get("n_cues_beyond_recording"):
        lines.append(f"  of which cues beyond the end of the recording itself: {report['n_cues_beyond_recording']}")
    return lines
