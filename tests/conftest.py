"""Shared fixtures. Tests never touch the network or the home folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

_HOME = Path(tempfile.mkdtemp(prefix="biokd-test-home-"))
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_HOME": str(_HOME / "hf"),
    "MNE_DATA": str(_HOME / "mne"),
    "MNE_DONTWRITE_HOME": "true",
    "MPLCONFIGDIR": str(_HOME / "mpl"),
    "MPLBACKEND": "Agg",
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
}.items():
    os.environ.setdefault(_key, _value)

ROOT = Path(__file__).resolve().parents[1]


REQUIRE_DATA_VARIABLE = "BIOKD_REQUIRE_TEST_DATA"


def real_data_path() -> Path:
    """Where the real public files are looked for (``BIOKD_TEST_DATA``, default ``../shared/data``)."""
    return Path(os.environ.get("BIOKD_TEST_DATA", ROOT.parent / "shared" / "data"))


def missing_real_data(path: Path) -> str | None:
    """Why the real files at ``path`` cannot be used, or None when they can."""
    if (path / "eegmmidb" / "S001").is_dir():
        return None
    return (
        f"real test data not found at {path} (expected {path / 'eegmmidb' / 'S001'}); "
        "set BIOKD_TEST_DATA to the shared/data folder"
    )


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real public files; skips without them, fails instead when ``BIOKD_REQUIRE_TEST_DATA=1``."""
    path = real_data_path()
    reason = missing_real_data(path)
    if reason is not None:
        if os.environ.get(REQUIRE_DATA_VARIABLE, "") not in ("", "0"):
            pytest.fail(f"{reason} ({REQUIRE_DATA_VARIABLE} is set, so the real-data tests may not be skipped)")
        pytest.skip(reason)
    return path
