"""Shared fixtures. Tests never touch the network or the home folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real public files (``BIOKD_TEST_DATA``, default ``../shared/data``)."""
    path = Path(os.environ.get("BIOKD_TEST_DATA", ROOT.parent / "shared" / "data"))
    if not (path / "eegmmidb" / "S001").is_dir():
        pytest.fail(f"real test data not found at {path}; set BIOKD_TEST_DATA to the shared/data folder")
    return path
