"""``biokd config show CONFIG``: the config as a run would use it, every default filled in."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Inspect run configs.", no_args_is_help=True)


@app.command("show")
def show(
    config: Path = typer.Argument(..., help="YAML config (see configs/).", exists=True, dir_okay=False),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a key, as in a run."),
) -> None:
    """Print the resolved config (YAML): the file's values, the overrides, and every default."""
    import yaml

    from ..config import load_config, to_dict
    from ..pipeline import RunConfig

    cfg = load_config(RunConfig, config, set_)
    typer.echo(f"# {config}: resolved as a train-teacher / distill run, defaults filled in")
    typer.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True).rstrip())
