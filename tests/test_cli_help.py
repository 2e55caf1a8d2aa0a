"""``biokd --version``, ``biokd config show``, and help that lists data commands first without type noise."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from biokd import __version__
from biokd.cli import app
from biokd.config import load_config, to_dict
from biokd.pipeline import RunConfig

ROOT = Path(__file__).resolve().parents[1]
WIDE = {"COLUMNS": "160", "NO_COLOR": "1", "TERM": "dumb"}


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=WIDE)


def _all_commands(group=None, prefix=()):
    """Every command path of the CLI, e.g. ("preprocess", "faced")."""
    import typer

    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _all_commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


def test_version() -> None:
    result = _invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"biokd {__version__}"


def test_data_commands_are_listed_first() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    listed = re.findall(r"^│ ([a-z][a-z-]+) ", result.output, flags=re.M)
    assert listed[:2] == ["preprocess", "simulate"] and {"train-teacher", "config", "export"} <= set(listed)


@pytest.mark.parametrize("path", sorted(_all_commands()), ids=" ".join)
def test_help_has_no_placeholder_noise(path: tuple[str, ...]) -> None:
    result = _invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output  # flags take no value
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage  # required arguments as CONFIG, not {config}


def test_config_show_prints_the_resolved_config_with_defaults() -> None:
    path = ROOT / "configs" / "physionet-mi-distill.yaml"
    result = _invoke("config", "show", str(path), "--set", "train.epochs=3")
    assert result.exit_code == 0, result.output
    header, _, body = result.output.partition("\n")
    assert header.startswith(f"# {path}: resolved as a train-teacher / distill run")
    shown = yaml.safe_load(body)
    assert shown == to_dict(load_config(RunConfig, path, ["train.epochs=3"]))
    in_file = yaml.safe_load(path.read_text())
    assert shown["train"]["epochs"] == 3 and set(shown["train"]) > set(in_file.get("train", {}))  # defaults added


def test_config_show_glucose_and_a_bad_key(monkeypatch, capsys) -> None:
    result = _invoke("config", "show", str(ROOT / "configs" / "glucose-distill.yaml"))
    assert result.exit_code == 0 and "kind: output_match" in result.output and "split_by: time" in result.output
    from biokd import cli

    argv = ["biokd", "config", "show", str(ROOT / "configs" / "faced-teacher.yaml"), "--set", "trian.epochs=2"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and "trian" in err and "Did you mean 'train'" in err


@pytest.mark.parametrize("name", sorted(p[1] for p in _all_commands() if p[0] == "preprocess"))
def test_every_preprocess_command_takes_set_and_jobs(name: str) -> None:
    import typer

    command = typer.main.get_command(app).commands["preprocess"].commands[name]
    options = {opt for param in command.params for opt in param.opts}
    assert {"--set", "--jobs", "--out", "--skip-bad"} <= options, name
