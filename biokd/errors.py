"""Errors biokd raises for bad input: each names the file (or key) and what is wrong."""

from __future__ import annotations

from pathlib import Path


class BiokdError(Exception):
    """Base class: a user-facing error whose message is shown without a traceback by the CLI."""


class DataError(BiokdError):
    """A data file is missing, damaged or not in the expected layout."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class ConfigError(BiokdError):
    """A config is invalid (unknown key, wrong type, impossible value)."""


class LeakageError(BiokdError):
    """A subject appears in more than one split."""


class WeightsError(BiokdError):
    """A weights file does not fit the model it is loaded into."""
