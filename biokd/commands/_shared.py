"""Options and helpers shared by the ``biokd preprocess`` commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

OUT: Path = typer.Option(..., help="Output folder (shards are reused when the protocol is unchanged).")
JOBS: int = typer.Option(1, min=1, help="Worker processes, one subject each.")
SET: list[str] = typer.Option([], "--set", help="Protocol override key=value, e.g. --set sfreq=250.")
SCHEDULER: str | None = typer.Option(
    None,
    help="A Dask scheduler (e.g. tcp://host:8786): run the subjects on its workers, which must share --out's "
    "file system. Default: local worker processes (--jobs).",
)
QUIET: bool = typer.Option(False, "--quiet", "-q", help="No progress bar.")


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


def check_out_folder(out: Path) -> Path:
    """``--out`` as a folder that can be written: not a file, not under a file, writable (made if missing)."""
    import os

    from ..errors import ConfigError

    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: --out is a file; it must name a folder (new or written by biokd before)")
    parent = next((p for p in out.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise ConfigError(f"{parent}: is a file, so --out {out} cannot be made under it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{out}: cannot create the --out folder ({err.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"{out}: the --out folder is not writable")
    return out


def run_preprocess(
    protocol_cls: type,
    build: Callable[..., Any],
    dataset: str,
    notes: Callable[[dict[str, Any]], list[str]],
    root: Path,
    out: Path,
    subjects: str | None,
    jobs: int,
    skip_bad: bool,
    set_: list[str],
    scheduler: str | None,
    quiet: bool,
) -> None:
    """The body every subject-numbered preprocess command shares: protocol from ``--set``, build, summary."""
    from ..config import load_config

    protocol = load_config(protocol_cls, None, set_)
    numbers = parse_subjects(subjects) if subjects else None
    check_out_folder(out)
    build(root, out, numbers, protocol, jobs=jobs, skip_bad=skip_bad, progress=not quiet, scheduler=scheduler)
    print_build_summary(out, dataset, notes)


def print_build_summary(out: Path, dataset: str, notes: Callable[[dict[str, Any]], list[str]] = lambda r: []) -> None:
    """Windows per split and class, subjects per split, processed / reused / skipped, then ``notes(report)``."""
    import json

    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    report = json.loads((out / "report.json").read_text())
    protocol = json.loads((out / "protocol.json").read_text())
    manifest = pd.read_csv(out / "manifest.csv", dtype={"subject": str, "session": str})
    splits = ["train", "val", "test"]
    title = f"{dataset} windows ({protocol['sfreq']:g} Hz, {len(protocol['ch_names'])} ch × {protocol['n_times']})"
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
        console.print(f"  skipped {subject}: {why}", markup=False, highlight=False, soft_wrap=True)
    for line in notes(report):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"report: {out / 'report.json'}", markup=False, highlight=False, soft_wrap=True)
