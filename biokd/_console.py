"""Terminal and notebook output helpers shared by the core."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


def live_progress_ok() -> bool:
    """Whether a rich live progress bar can be shown here.

    In Jupyter, rich draws live displays through ipywidgets and, without it, warns once per bar (one warning per
    epoch); there the bar is left out instead. Install the ``notebooks`` extra for bars in Jupyter.
    """
    from rich import get_console

    return not get_console().is_jupyter or importlib.util.find_spec("ipywidgets") is not None


@contextmanager
def quiet_libraries(enabled: bool = True) -> Iterator[None]:
    """Keep library chatter off the terminal while the block runs: everything written to standard error.

    ExecuTorch's runtime logs, torchao's failed optional kernels and torch's warnings reach file descriptor 2 from
    C++ and Python alike, so fd 2 itself is pointed at a scratch file (Python warnings are ignored too). Only for
    blocks that report through return values and exceptions (an export): their errors still reach the user, and a
    failure adds one line saying how to see what was hidden.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile() as hidden:
        try:
            os.dup2(hidden.fileno(), 2)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            if hidden.seek(0, os.SEEK_END):
                print("(library messages were hidden: rerun with --verbose to see them)", file=sys.stderr)
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
