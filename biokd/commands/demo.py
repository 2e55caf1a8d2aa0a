"""``biokd demo``: the README's main job (EEG), or ``biokd demo glucose``."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    kind: str = typer.Argument("eeg", help="eeg (CBraMod → MiC on generated EEGMMIDB data), glucose, ..."),
    out: Path = typer.Option(Path("biokd-demo"), "--out", "-o", help="Folder for data, runs and reports."),
    quick: bool = typer.Option(False, help="A much smaller run (seconds), for smoke tests."),
    seed: int = typer.Option(0, help="Seed of the data generation and training."),
) -> None:
    """Generate data, fine-tune a teacher, distil a student, and write the clinical report."""
    from rich.console import Console

    from .train import setup_logging

    setup_logging()
    console = Console()
    from ..registry import DEMOS, resolve

    report = resolve(DEMOS, kind, "demo")(out / kind, quick, seed)
    console.print(
        "[bold]Note:[/] the data were generated and the teacher was not pretrained; the numbers show that the "
        "pipeline works, not clinical performance."
    )
    console.print(f"report: {report}", markup=False)
