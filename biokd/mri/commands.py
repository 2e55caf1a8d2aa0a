"""The MRI modality's CLI commands (``biokd preprocess oasis3``), added by :func:`register` (typer only at import)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..commands._shared import JOBS, OUT, SET, check_out_folder


def preprocess_oasis3(
    root: Path = typer.Option(..., help="OASIS-3 download: OAS30001_MR_d0129/anat1/… or BIDS sub-OAS30001/…, tables."),
    out: Path = OUT,
    jobs: int = JOBS,
    skip_bad: bool = typer.Option(False, help="Skip subjects with damaged files or no matched visit; list them."),
    set_: list[str] = SET,
) -> None:
    """Preprocess OASIS-3 into per-visit T1w MRI (+ amyloid PET SUVR) items labelled by amyloid status."""
    from ..config import load_config
    from .oasis3 import Oasis3Protocol
    from .oasis3 import preprocess_oasis3 as run

    protocol = load_config(Oasis3Protocol, None, set_)
    check_out_folder(out)
    run(root, out, protocol, jobs=jobs, skip_bad=skip_bad)
    print_summary(out)


def print_summary(out: Path) -> None:
    """Visits per split and amyloid status, subjects per split, processed / reused / skipped, PET notes."""
    import json

    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    report = json.loads((out / "report.json").read_text())
    manifest = pd.read_csv(out / "manifest.csv", dtype={"subject": str, "session": str})
    splits = ["train", "val", "test"]
    table = Table("amyloid", *splits, "total", title="OASIS-3 visits (MR matched to amyloid PET)")
    for name in sorted(manifest["label_name"].unique()):
        row = [int(((manifest["label_name"] == name) & (manifest["split"] == s)).sum()) for s in splits]
        table.add_row(name, *map(str, row), str(sum(row)))
    n_subjects = [manifest.loc[manifest["split"] == s, "subject"].nunique() for s in splits]
    table.add_row("[dim]subjects[/]", *map(str, n_subjects), str(sum(n_subjects)))
    console = Console()
    console.print(table)
    console.print(
        f"subjects: {len(report['processed'])} processed, {len(report['reused'])} reused, {report['n_skipped']} skipped"
    )
    for subject, why in report["skipped"].items():
        console.print(f"  skipped {subject}: {why}", markup=False, highlight=False, soft_wrap=True)
    for key in ("mr_sessions_without_pet", "mr_sessions_without_pet_volume"):
        if report.get(key):
            console.print(f"{key.replace('_', ' ')} (not kept): {', '.join(report[key])}", markup=False, soft_wrap=True)
    console.print(f"report: {out / 'report.json'}", markup=False, highlight=False, soft_wrap=True)


def register(preprocess: typer.Typer, simulate: typer.Typer) -> None:
    preprocess.command("oasis3")(preprocess_oasis3)
