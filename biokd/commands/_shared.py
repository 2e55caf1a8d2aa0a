"""Options and helpers shared by the ``biokd preprocess`` commands."""

from __future__ import annotations

from pathlib import Path

import typer

OUT: Path = typer.Option(..., help="Output folder (shards are reused when the protocol is unchanged).")
JOBS: int = typer.Option(1, min=1, help="Worker processes, one subject each.")
SET: list[str] = typer.Option([], "--set", help="Protocol override key=value, e.g. --set sfreq=250.")


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
