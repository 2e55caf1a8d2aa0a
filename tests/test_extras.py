"""A missing optional dependency gives one line with the install command for this environment."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from biokd import _extras
from biokd._extras import MissingExtraError, install_command, require

ROOT = Path(__file__).resolve().parents[1]


def _block(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make ``import package`` (and its submodules) fail as if it were not installed."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)


def test_command_for_a_checkout_in_another_environment(monkeypatch) -> None:
    monkeypatch.setattr(sys, "prefix", "/somewhere/else")
    assert install_command("glucose") == f"{sys.executable} -m pip install -e '{ROOT}[glucose]'"


def test_command_for_the_checkouts_own_venv(monkeypatch) -> None:
    monkeypatch.setattr(sys, "prefix", str(ROOT / ".venv"))
    assert install_command("export") == f"cd {ROOT} && bash install.sh export"


def test_command_for_an_installed_wheel(monkeypatch) -> None:
    monkeypatch.setattr(_extras, "checkout_root", lambda: None)
    assert install_command("glucose") == "pip install 'biokd[glucose]'"


def test_every_named_extra_is_in_pyproject() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(_extras.EXTRAS) <= set(extras)
    assert "notebooks" in extras["test"][0]  # bash install.sh test brings the notebooks extra


def test_require_names_package_extra_and_command(monkeypatch) -> None:
    _block(monkeypatch, "json")
    with pytest.raises(MissingExtraError) as info:
        require("json.decoder", "glucose", "reading the thing", package="json")
    message = str(info.value)
    assert message.startswith("reading the thing needs json, which is not installed; install the glucose extra: ")
    assert install_command("glucose") in message and "\n" not in message


def test_cli_names_the_glucose_extra_in_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    from biokd import cli

    _block(monkeypatch, "simglucose")
    argv = ["biokd", "simulate", "glucose", "--out", str(tmp_path / "cohort"), "--patients", "1", "--days", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: simulating a glucose cohort needs simglucose")
    assert "[glucose]" in err or "install.sh glucose" in err  # the extra's brackets survive the console
    assert install_command("glucose").split()[-1] in err.replace("\n", "")
    assert "Traceback" not in err
