"""The top-level group: commands in the order a user needs them, ``--version``, and help without type noise."""

from __future__ import annotations

import typer
import typer.core

#: Listed first in ``biokd --help``: data come before training.
FIRST = ("preprocess", "simulate")


class BiokdGroup(typer.core.TyperGroup):
    """Lists :data:`FIRST` before the other commands (typer lists sub-apps after plain commands)."""

    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


def _show_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"biokd {__version__}")
        raise typer.Exit()


def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print biokd's version and exit."
    ),
) -> None:
    """Distil biomedical foundation models into small models that run on wearables."""


def tidy_help() -> None:
    """Help without typer's placeholders: no ``<bool>`` beside flags, ``CONFIG`` rather than ``{config}``.

    Typer (0.2x) prints every parameter's type in angle brackets, flags included, and wraps required arguments in
    braces in the usage line; click's conventions are kept instead. Older typers lack these hooks: nothing changes.
    """
    option, argument = getattr(typer.core, "TyperOption", None), getattr(typer.core, "TyperArgument", None)
    if option is not None and hasattr(option, "display_type_rich") and not getattr(option, "_biokd_tidy", False):
        shown = option.display_type_rich

        def display_type_rich(self, ctx):
            return None if self.is_flag or self.count else shown(self, ctx)

        option.display_type_rich = display_type_rich
        option._biokd_tidy = True
    if argument is not None and hasattr(argument, "_usage_display_name"):

        def usage_name(self) -> str:
            name = (self.metavar or self.name or "").upper()
            name = name if self.required else f"[{name}]"
            return name + ("..." if self.nargs != 1 else "")

        argument._usage_display_name = usage_name
