"""Library chatter (C++ logs on fd 2, Python warnings) stays off the terminal during an export unless --verbose."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOISY = """
import os, sys, warnings
from biokd._console import quiet_libraries
print("before", file=sys.stderr, flush=True)
with quiet_libraries({enabled}):
    os.write(2, b"[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\\n")  # as C++ code writes
    print("Failed to load _C_mxfp8.so", file=sys.stderr)
    warnings.warn("torchvision is not installed", stacklevel=1)
    print("result on stdout")
    if {fail}:
        raise RuntimeError("export failed: parity")
print("after", file=sys.stderr)
"""


def _run(enabled: bool, fail: bool = False) -> subprocess.CompletedProcess:
    code = NOISY.format(enabled=enabled, fail=fail)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_library_output_is_hidden_and_stdout_kept() -> None:
    proc = _run(True)
    assert proc.returncode == 0
    assert proc.stderr == "before\nafter\n"
    assert proc.stdout == "result on stdout\n"


def test_verbose_shows_everything() -> None:
    proc = _run(False)
    assert "[cpuinfo_utils.cpp:71]" in proc.stderr and "Failed to load" in proc.stderr
    assert "torchvision is not installed" in proc.stderr


def test_a_failure_still_shows_its_error_and_how_to_see_the_rest() -> None:
    proc = _run(True, fail=True)
    assert proc.returncode == 1
    assert "RuntimeError: export failed: parity" in proc.stderr
    assert "rerun with --verbose" in proc.stderr and "cpuinfo" not in proc.stderr


@pytest.mark.parametrize("flag", ["--verbose", "-v"])
def test_export_takes_verbose(flag: str) -> None:
    from typer.testing import CliRunner

    from biokd.cli import app

    result = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "160", "NO_COLOR": "1"})
    assert flag in result.output
