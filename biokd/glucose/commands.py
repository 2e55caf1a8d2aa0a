"""``biokd preprocess ohiot1dm`` and ``biokd simulate glucose``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..commands._shared import JOBS, QUIET, SCHEDULER, SET


def preprocess(
    root: Path = typer.Option(..., help="Folder holding the OhioT1DM XML files (any layout; searched recursively)."),
    out: Path = typer.Option(..., help="Output folder (a patient is reused when protocol and files are unchanged)."),
    patients: str | None = typer.Option(None, help="Comma-separated patient ids, e.g. '540,544' (default: all)."),
    history: int = typer.Option(36, min=2, help="Input history in 5-minute steps (36 = 180 min)."),
    horizons: str = typer.Option("6,12", help="Forecast horizons in 5-minute steps (6,12 = 30 and 60 min)."),
    val_fraction: float = typer.Option(
        0.2, min=0.0, max=0.9, help="Last fraction of each training file for validation."
    ),
    max_fill_min: int = typer.Option(30, min=0, help="Forward-fill CGM gaps in the input for at most this long."),
    skip_bad: bool = typer.Option(False, help="Skip patients with damaged files and list them in the report."),
    jobs: int = JOBS,
    set_: list[str] = SET,
    scheduler: str | None = SCHEDULER,
    quiet: bool = QUIET,
) -> None:
    """Preprocess OhioT1DM (2018/2020) into windows under the BGLP challenge rules.

    Every protocol field can be set with ``--set`` (after the options above), e.g. ``--set score_start_min=30``
    or ``--set grid.glucose_range=[40,400]``."""
    from rich.console import Console

    from ..config import load_config
    from ..errors import ConfigError
    from .ohiot1dm import OhioProtocol, preprocess_ohiot1dm

    try:
        steps = tuple(int(h) for h in horizons.split(","))
    except ValueError:
        raise ConfigError(f"--horizons: expected comma-separated step counts like '6,12'; got {horizons!r}") from None
    if any(h < 1 for h in steps):
        raise ConfigError(f"--horizons: steps must be positive (the target follows the input); got {horizons!r}")
    from ..commands._shared import check_out_folder

    options = [f"history={history}", f"horizons={list(steps)}", f"val_fraction={val_fraction}"]
    protocol = load_config(OhioProtocol, None, [*options, f"grid.max_fill_min={max_fill_min}", *set_])
    check_out_folder(out)
    report = preprocess_ohiot1dm(
        root,
        out,
        protocol,
        jobs=jobs,
        patients=[p.strip() for p in patients.split(",")] if patients else None,
        skip_bad=skip_bad,
        progress=not quiet,
        scheduler=scheduler,
    )
    console = Console()
    for pid, notes in report["patients"].items():
        w = notes["windows"]
        console.print(
            f"{pid}: train {w['train']}, val {w['val']}, test {w['test']} windows; "
            f"{notes['events_skipped']} events skipped",
            markup=False,
        )
    for pid, why in report["skipped"].items():
        console.print(f"skipped {pid}: {why}", style="yellow", markup=False, highlight=False)
    console.print(f"{report['n_windows']} windows in {out} (details in {out / 'report.json'})", markup=False)


def simulate(
    patients: int = typer.Option(6, min=1, max=30, help="Virtual patients (adults, then adolescents, children)."),
    days: float = typer.Option(10, min=1, help="Simulated days per patient (last ~20% become the test file)."),
    out: Path = typer.Option(..., help="Output folder for the OhioT1DM-schema XML files."),
    seed: int = typer.Option(0, help="Seed of meals, sensor noise and drop-outs."),
    jobs: int = typer.Option(1, min=1, help="Worker processes, one patient each."),
) -> None:
    """Simulate a type-1 cohort with simglucose (UVA/Padova) and write it as OhioT1DM XML."""
    from rich.console import Console

    from .simulate import simulate_cohort

    report = simulate_cohort(out, patients, days, seed, jobs=jobs)
    reused = sum(bool(p.get("reused")) for p in report["patients"])
    Console().print(
        f"{len(report['patients'])} patients x {days} days in {out} ({reused} reused); "
        f"{report['seconds_per_day']:.2f} s per simulated day and patient",
        markup=False,
    )


def register(preprocess_app: typer.Typer, simulate_app: typer.Typer) -> None:
    """Add the glucose commands to ``biokd preprocess`` and ``biokd simulate``."""
    preprocess_app.command("ohiot1dm")(preprocess)
    simulate_app.command("glucose")(simulate)
