"""Optional dependencies: one line naming the missing package and the exact command that installs it here."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from .errors import BiokdError

#: The optional-dependency groups of pyproject.toml that the code asks for.
EXTRAS = ("glucose", "export", "notebooks", "test")


class MissingExtraError(BiokdError):
    """An optional package is not installed; the message gives the install command for this environment."""


def checkout_root() -> Path | None:
    """The source checkout biokd is imported from (an editable install), or None for an installed wheel."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "install.sh").is_file() else None


def install_command(extra: str) -> str:
    """The command that installs ``extra`` into the running environment."""
    root = checkout_root()
    if root is None:
        return f"pip install 'biokd[{extra}]'"
    if Path(sys.prefix).resolve() == (root / ".venv").resolve():  # install.sh's own venv: it keeps torch pinned
        return f"cd {root} && bash install.sh {extra}"
    return f"{sys.executable} -m pip install -e '{root}[{extra}]'"


def missing_extra_message(package: str, extra: str, needed_for: str) -> str:
    """One line: what needs ``package``, and how to install the ``extra`` that holds it."""
    return f"{needed_for} needs {package}, which is not installed; install the {extra} extra: {install_command(extra)}"


def require(module: str, extra: str, needed_for: str, package: str | None = None) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` with the install command for ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        name = package or module.split(".")[0]
        raise MissingExtraError(f"{missing_extra_message(name, extra, needed_for)} ({err})") from err
