"""``biokd preprocess faced``: FACED release folder → shard folder of 9-class emotion windows."""

from __future__ import annotations

from pathlib import Path

import typer

from ._shared import JOBS, OUT, SET, parse_subjects


def preprocess(
    root: Path = typer.Option(..., help="FACED release folder holding Processed_data/ and Recording_info.csv."),
    out: Path = OUT,
    subjects: str | None = typer.Option(None, help="Subject indices, e.g. '0-9,15' (default: all listed and found)."),
    jobs: int = JOBS,
    skip_bad: bool = typer.Option(False, help="Skip missing, extra or damaged subjects; list them."),
    set_: list[str] = SET,
) -> None:
    """Preprocess FACED into 10-s windows of 9 emotion classes (CBraMod's protocol by default)."""
    from ..config import load_config
    from ..datasets.faced import FacedProtocol, preprocess_faced

    protocol = load_config(FacedProtocol, None, set_)
    numbers = parse_subjects(subjects) if subjects else None
    preprocess_faced(root, out, numbers, protocol, jobs=jobs, skip_bad=skip_bad)
    _print_summary(out)


def _print_summary(out: Path) -> None:
    """Windows per split and class, subjects processed / reused / skipped, suspicious amplitudes."""
    import json

    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    report = json.loads((out / "report.json").read_text())
    protocol = json.loads((out / "protocol.json").read_text())
    manifest = pd.read_csv(out / "manifest.csv", dtype={"subject": str, "session": str})
    splits = ["train", "val", "test"]
    title = (
        f"FACED windows ({protocol['sfreq']:g} Hz, {len(protocol['ch_names'])} ch × {protocol['n_times']}, "
        f"from {report['processed_dir']}/)"
    )
    table = Table("class", *splits, "total", title=title)
    counts = manifest.groupby(["label_name", "split"]).size() if len(manifest) else pd.Series(dtype=int)
    for name in protocol["class_names"]:
        row = [int(counts.get((name, s), 0)) for s in splits]
        table.add_row(name, *map(str, row), str(sum(row)))
    per_split = [int((manifest["split"] == s).sum()) for s in splits]
    table.add_row("[bold]all[/]", *map(str, per_split), f"[bold]{len(manifest)}[/]")
    n_subjects = [manifest.loc[manifest["split"] == s, "subject"].nunique() for s in splits]
    table.add_row("[dim]subjects[/]", *map(str, n_subjects), str(sum(n_subjects)))
    console = Console()
    console.print(table)
    console.print(
        f"subjects: {len(report['processed'])} processed, {len(report['reused'])} reused, {report['n_skipped']} skipped"
    )
    for subject, why in report["skipped"].items():
        console.print(f"  skipped {subject}: {why}", highlight=False, soft_wrap=True)
    for subject, why in report["suspect_units"].items():
        console.print(f"  [yellow]check units[/] {subject}: {why}", highlight=False, soft_wrap=True)
    console.print(f"report: {out / 'report.json'}", highlight=False, soft_wrap=True)
