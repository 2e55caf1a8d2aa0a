"""Terminal and notebook output helpers shared by the core."""

from __future__ import annotations

import importlib.util


def live_progress_ok() -> bool:
    """Whether a rich live progress bar can be shown here.

    In Jupyter, rich draws live displays through ipywidgets and, without it, warns once per bar (one warning per
    epoch); there the bar is left out instead. Install the ``notebooks`` extra for bars in Jupyter.
    """
    from rich import get_console

    return not get_console().is_jupyter or importlib.util.find_spec("ipywidgets") is not None
