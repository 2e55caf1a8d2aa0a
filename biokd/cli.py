"""The ``biokd`` command line. Commands are thin: each calls a public function of the package.

Command modules import only typer at the top, so ``biokd --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from .commands import _help, config_cmd, demo, export, info, train
from .registry import MODALITIES

app = typer.Typer(
    help="Distil biomedical foundation models into small models that run on wearables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=_help.BiokdGroup,
)
app.callback()(_help.main_options)
_help.tidy_help()
preprocess_app = typer.Typer(help="Turn a dataset release into windows ready for training.", no_args_is_help=True)
simulate_app = typer.Typer(help="Generate simulated cohorts in a real release's format.", no_args_is_help=True)
app.add_typer(preprocess_app, name="preprocess")
app.add_typer(simulate_app, name="simulate")

for _modality in MODALITIES:  # each modality adds its own preprocess / simulate commands
    importlib.import_module(f"{_modality}.commands").register(preprocess_app, simulate_app)
app.command("train-teacher")(train.train_teacher)
app.command("distill")(train.distill)
app.command("evaluate")(train.evaluate)
app.command("demo")(demo.demo)
app.command("export")(export.export)
app.command("sys-info")(info.sys_info)
app.add_typer(config_cmd.app, name="config")


def main() -> None:
    """Entry point: user errors print one clear line and exit with status 2."""
    from .errors import BiokdError

    try:
        app()
    except BiokdError as err:
        from rich.console import Console
        from rich.text import Text

        # The message holds user text (paths, values): printed as plain text, never parsed as console markup.
        Console(stderr=True).print(Text.assemble(("error:", "bold red"), f" {err}"), highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
