"""``biokd preprocess physionet-mi``: EEGMMIDB release folder → shard folder of motor-imagery windows."""

from __future__ import annotations

from pathlib import Path

import typer

from ._shared import JOBS, OUT, SET, parse_subjects


def preprocess(
    root: Path = typer.Option(..., help="EEGMMIDB release folder holding S001/ … S109/ (files/eegmmidb/1.0.0)."),
    out: Path = OUT,
    subjects: str | None = typer.Option(None, help="Subject numbers, e.g. '1-10,12' (default: all found)."),
    jobs: int = JOBS,
    skip_bad: bool = typer.Option(False, help="Skip subjects with damaged or missing files; list them."),
    set_: list[str] = SET,
) -> None:
    """Preprocess PhysioNet EEG Motor Movement/Imagery into 4-class windows (CBraMod's protocol by default)."""
    from ..config import load_config
    from ..datasets.physionet_mi import PhysionetMIProtocol, preprocess_physionet_mi

    protocol = load_config(PhysionetMIProtocol, None, set_)
    numbers = parse_subjects(subjects) if subjects else None
    preprocess_physionet_mi(root, out, numbers, protocol, jobs=jobs, skip_bad=skip_bad)
    _print_summary(out)


def _print_summary(out: Path) -> None:
    """Windows per split and class, subjects processed / reused / skipped, resampled subjects."""
    import json

    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    report = json.loads((out / "report.json").read_text())
    protocol = json.loads((out / "protocol.json").read_text())
    manifest = pd.read_csv(out / "manifest.csv", dtype={"subject": str, "session": str})
    splits = ["train", "val", "test"]
    table = Table(
        "class",
        *splits,
        "total",
        title=f"PhysioNet-MI windows ({protocol['sfreq']:g} Hz, "
        f"{len(protocol['ch_names'])} ch × {protocol['n_times']})",
    )
    counts = manifest.groupby(["label_name", "split"]).size() if len(manifest) else pd.Series(dtype=int)
    for name in protocol["class_names"]:
        row = [int(counts.get((name, s), 0)) for s in splits]
        table.add_row(name, *map(str, row), str(sum(row)))
    per_split = [int((manifest["split"] == s).sum()) for s in splits]
    table.add_row("[bold]all[/]", *map(str, per_split), f"[bold]{len(manifest)}[/]")
    console = Console()
    console.print(table)
    console.print(
        f"subjects: {len(report['processed'])} processed, {len(report['reused'])} reused, {report['n_skipped']} skipped"
    )
    for subject, why in report["skipped"].items():
        console.print(f"  skipped {subject}: {why}", highlight=False, soft_wrap=True)
    if report["resampled_from"]:
        listed = ", ".join(f"{s} ({f} Hz)" for s, f in report["resampled_from"].items())
        console.print(f"recorded at a rate other than 160 Hz (resampled like the others): {listed}")
    if report["n_windows_past_end"]:
        console.print(f"windows running past the end of a recording (not kept): {report['n_windows_past_end']}")
    console.print(f"report: {out / 'report.json'}", highlight=False, soft_wrap=True)
