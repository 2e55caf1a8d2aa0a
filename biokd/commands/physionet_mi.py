"""``biokd preprocess physionet-mi``: EEGMMIDB release folder → shard folder of motor-imagery windows."""

from __future__ import annotations

from pathlib import Path

import typer


def preprocess(
    root: Path = typer.Option(..., help="EEGMMIDB release folder holding S001/ … S109/ (files/eegmmidb/1.0.0)."),
    out: Path = typer.Option(..., help="Output folder (shards are reused when the protocol is unchanged)."),
    subjects: str | None = typer.Option(None, help="Subject numbers, e.g. '1-10,12' (default: all found)."),
    jobs: int = typer.Option(1, min=1, help="Worker processes, one subject each."),
    skip_bad: bool = typer.Option(False, help="Skip subjects with damaged or missing files; list them."),
    set_: list[str] = typer.Option([], "--set", help="Protocol override key=value, e.g. --set sfreq=160."),
) -> None:
    """Preprocess PhysioNet EEG Motor Movement/Imagery into 4-class windows (CBraMod's protocol by default)."""
    from ..config import load_config
    from ..datasets.physionet_mi import PhysionetMIProtocol, preprocess_physionet_mi

    protocol = load_config(PhysionetMIProtocol, None, set_)
    numbers = parse_subjects(subjects) if subjects else None
    preprocess_physionet_mi(root, out, numbers, protocol, jobs=jobs, skip_bad=skip_bad)
    _print_summary(out)


def parse_subjects(text: str) -> list[int]:
    """``'1-10,12'`` → ``[1, …, 10, 12]``."""
    from ..errors import ConfigError

    numbers: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        try:
            if "-" in part:
                first, last = (int(v) for v in part.split("-", 1))
                if first > last:
                    raise ValueError
                numbers.extend(range(first, last + 1))
            else:
                numbers.append(int(part))
        except ValueError:
            raise ConfigError(f"--subjects: {part!r} is not a number or a range like 1-10 (in {text!r})") from None
    return sorted(set(numbers))


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
