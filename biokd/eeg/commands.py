"""The EEG modality's CLI commands, added to ``biokd`` by :func:`register` (typer only at import)."""

from __future__ import annotations

import typer


def register(preprocess: typer.Typer, simulate: typer.Typer) -> None:
    from . import cmd_faced, cmd_physionet_mi

    preprocess.command("physionet-mi")(cmd_physionet_mi.preprocess)
    preprocess.command("faced")(cmd_faced.preprocess)
