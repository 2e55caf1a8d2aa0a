"""The real-data fixture skips on a fresh clone and fails when CI requires the data."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py").read_text()
USES_REAL_DATA = """
def test_needs_real_files(real_data):
    assert (real_data / "eegmmidb" / "S001").is_dir()
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, data: Path, require: str | None):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_uses_real_data=USES_REAL_DATA)
    monkeypatch.setenv("BIOKD_TEST_DATA", str(data))
    if require is None:
        monkeypatch.delenv("BIOKD_REQUIRE_TEST_DATA", raising=False)
    else:
        monkeypatch.setenv("BIOKD_REQUIRE_TEST_DATA", require)
    return pytester.runpytest("-rs", "-p", "no:cacheprovider")


def test_absent_data_skip_with_the_folder_named(pytester, monkeypatch, tmp_path: Path) -> None:
    result = _run(pytester, monkeypatch, tmp_path / "nowhere", None)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*real test data not found at*nowhere*BIOKD_TEST_DATA*"])


def test_absent_data_fail_when_required(pytester, monkeypatch, tmp_path: Path) -> None:
    result = _run(pytester, monkeypatch, tmp_path / "nowhere", "1")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*BIOKD_REQUIRE_TEST_DATA is set*"])


def test_zero_means_not_required(pytester, monkeypatch, tmp_path: Path) -> None:
    _run(pytester, monkeypatch, tmp_path / "nowhere", "0").assert_outcomes(skipped=1)


def test_present_data_are_used(pytester, monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "data" / "eegmmidb" / "S001").mkdir(parents=True)
    _run(pytester, monkeypatch, tmp_path / "data", "1").assert_outcomes(passed=1)
