"""The CLI: fast help (no heavy imports), every shipped config valid, user errors as one line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from biokd.config import load_config
from biokd.pipeline import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def test_help_imports_no_heavy_library():
    code = (
        "import sys; from biokd.cli import app; "
        "heavy = [m for m in ('torch', 'mne', 'braindecode', 'sklearn', 'pandas', 'onnx') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    if path.name == "glucose-demo.yaml":
        from biokd.glucose.demo import GlucoseRunConfig

        load_config(GlucoseRunConfig, path)
    else:
        assert load_config(RunConfig, path).train.epochs > 0


def test_every_subpackage_is_a_package():
    """setuptools only installs folders with an __init__.py; an editable install would hide a miss."""
    for folder in (ROOT / "biokd").rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py")):
            assert (folder / "__init__.py").is_file(), folder


def _biokd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "biokd.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_unknown_config_key_is_one_clear_line_and_exit_2(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("data: {root: x}\nteacher: {name: cbramod}\ntrain: {epoch: 3}\n")
    result = _biokd("train-teacher", str(cfg), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown config key 'train.epoch'" in result.stderr and "Did you mean 'epochs'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_missing_data_folder_names_the_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{root: {tmp_path / 'nowhere'}}}\nteacher: {{name: cbramod}}\n")
    result = _biokd("train-teacher", str(cfg), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2
    assert "nowhere/manifest.csv: missing" in result.stderr
