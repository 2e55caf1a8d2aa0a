"""``biokd preprocess abide`` and ``biokd simulate abide``, added to the CLI by :func:`register`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..commands._shared import JOBS, OUT, SET, check_out_folder


def register(preprocess_app: typer.Typer, simulate_app: typer.Typer) -> None:
    preprocess_app.command("abide")(preprocess)
    simulate_app.command("abide")(simulate)


def preprocess(
    root: Path = typer.Option(..., help="ABIDE root: holds ABIDE_pcp/<pipeline>/<strategy>/ or Outputs/…"),
    out: Path = OUT,
    phenotypic: Path | None = typer.Option(None, help="Phenotypic_V1_0b_preprocessed1.csv (default: in the root)."),
    jobs: int = JOBS,
    skip_bad: bool = typer.Option(False, help="Skip subjects with unreadable or inconsistent files; list them."),
    set_: list[str] = SET,
) -> None:
    """Preprocess ABIDE Preprocessed ROI time series into connectivity matrices (one split per build:
    ``--set split=stratified_kfold --set fold=2`` or ``--set split=leave_one_site_out --set test_site=NYU``)."""
    from ..config import load_config
    from .abide import AbideProtocol
    from .preprocess import preprocess_abide

    protocol = load_config(AbideProtocol, None, set_)
    check_out_folder(out)
    preprocess_abide(root, out, protocol, phenotypic, jobs=jobs, skip_bad=skip_bad)
    print_summary(out)


def simulate(
    out: Path = typer.Option(..., help="Folder for the generated release (PCP layout + phenotypic CSV)."),
    n_sites: int = typer.Option(4, min=2, max=10),
    subjects_per_site: int = typer.Option(20, min=4),
    n_rois: int = typer.Option(32, min=4, help="ROI columns (the real CC200 has 200)."),
    seed: int = typer.Option(0),
) -> None:
    """Write GENERATED ABIDE-like sites as real .1D files and a phenotypic table (for demos and tests)."""
    from .synthetic import write_synthetic_abide

    made = write_synthetic_abide(out, n_sites, subjects_per_site, n_rois=n_rois, seed=seed)
    typer.echo(f"GENERATED data: {len(made.files)} subjects in {made.root} (phenotypic: {made.phenotypic})")


def print_summary(out: Path) -> None:
    """Subjects per split and class, per site, and what was skipped or left out."""
    import json

    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    report = json.loads((out / "report.json").read_text())
    manifest = pd.read_csv(out / "manifest.csv", dtype={"subject": str, "site": str})
    splits = ["train", "val", "test"]
    table = Table("site", *[f"{s} (autism/control)" for s in splits], title="ABIDE subjects")
    for site, rows in manifest.groupby("site"):
        cells = []
        for s in splits:
            part = rows[rows["split"] == s]
            cells.append(f"{int((part['label'] == 1).sum())}/{int((part['label'] == 0).sum())}")
        table.add_row(str(site), *cells)
    console = Console()
    console.print(table)
    console.print(
        f"subjects: {len(report['processed'])} processed, {len(report['reused'])} reused, {report['n_skipped']} skipped"
    )
    for subject, why in report["skipped"].items():
        console.print(f"  skipped {subject}: {why}", markup=False, highlight=False, soft_wrap=True)
    survey = json.loads((out / "survey.json").read_text()) if (out / "survey.json").is_file() else {}
    for key, value in survey.get("counts", {}).items():
        console.print(f"  {key}: {value}", markup=False, highlight=False)
    console.print(f"report: {out / 'report.json'}", markup=False, highlight=False, soft_wrap=True)
