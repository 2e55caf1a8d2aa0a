"""Every notebook runs top to bottom in a Jupyter kernel, as from Jupyter (the file executed by nbclient)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import REQUIRE_DATA_VARIABLE, real_data_path

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
WARNING_WORDS = ("Warning", "warn(", "ipywidgets", "IProgress", "tqdm")


def _outputs(notebook: dict, name: str) -> list[str]:
    """The text of every stream output called ``name`` (stdout or stderr) in the executed notebook."""
    return [
        "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
        for cell in notebook["cells"]
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == name
    ]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_a_kernel(path: Path, tmp_path: Path, monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat", reason="the notebooks extra is not installed: bash install.sh test")
    nbclient = pytest.importorskip("nbclient", reason="the notebooks extra is not installed: bash install.sh test")
    # The kernel inherits this environment: the checkout under test first on its path, no hub, no home writes.
    root = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("BIOKD_TEST_DATA", str(real_data_path()))  # where the real files are, as the tests look
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    assert (tmp_path / "biokd-demo-notebook" / "runs" / "student" / "report.html").is_file()
    noise = [text for text in _outputs(notebook, "stderr") if any(word in text for word in WARNING_WORDS)]
    assert not noise, f"warnings printed in {path.name}: {noise[:3]}"
    results = [out for cell in notebook["cells"] for out in cell.get("outputs", [])]
    assert any(out.get("output_type") == "execute_result" for out in results)  # the summary tables were shown
    CHECKS.get(path.name, lambda *_: None)(notebook, tmp_path)


def _images(notebook: dict) -> int:
    return sum("image/png" in out.get("data", {}) for cell in notebook["cells"] for out in cell.get("outputs", []))


def _check_fmri(notebook: dict, tmp_path: Path) -> None:
    """The real ABIDE files are read when present (skipped, and said, when absent); the demo's figures are drawn."""
    text = "\n".join(_outputs(notebook, "stdout"))
    data = real_data_path() / "abide"
    if (data / "Caltech_0051456_rois_aal.1D").is_file() and (data / "Phenotypic_V1_0b_preprocessed1.csv").is_file():
        assert "Caltech_0051456_rois_aal.1D: 145 × 116 (time points × ROIs)" in text
        assert float(re.search(r"numpy.corrcoef ([0-9.e+-]+)", text).group(1)) < 1e-6
        shown = [
            "".join(out["data"]["text/plain"])
            for cell in notebook["cells"]
            for out in cell.get("outputs", [])
            if out.get("output_type") == "execute_result"
        ]
        assert any(re.search(r"with_files\s+1035", t) and re.search(r"quality_checked\s+871", t) for t in shown)
        real_figures = 1
    else:
        if os.environ.get(REQUIRE_DATA_VARIABLE, "") not in ("", "0"):
            pytest.fail(f"real ABIDE files not found at {data} ({REQUIRE_DATA_VARIABLE} is set)")
        assert "skipped:" in text
        real_figures = 0
    summary = json.loads((tmp_path / "biokd-demo-notebook" / "metrics.json").read_text())
    assert len(summary["continual"]["sites"]) == 2 and len(summary["leave_site_out"]["rows"]) == 6
    assert _images(notebook) == real_figures + 2  # a generated subject's matrix and the accuracy heat maps


CHECKS = {"fmri_connectivity.ipynb": _check_fmri}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_says_what_the_run_costs_and_shows(path: Path) -> None:
    first = "".join(json.loads(path.read_text())["cells"][0]["source"])
    assert "quick run" in first.lower() and "full run" in first.lower()
    assert "minute" in first or " s " in first


def test_no_live_progress_in_jupyter_without_ipywidgets(monkeypatch) -> None:
    """rich draws live bars in Jupyter through ipywidgets and warns once per bar without it: the bar is left out."""
    import importlib.util

    import rich
    from rich.console import Console

    from biokd import _console

    monkeypatch.setattr(rich, "_console", Console(force_jupyter=True))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ipywidgets" else real_find_spec(name, *a)
    )
    assert _console.live_progress_ok() is False
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)
    assert _console.live_progress_ok() is (real_find_spec("ipywidgets") is not None)
    monkeypatch.setattr(rich, "_console", Console(force_jupyter=False))
    assert _console.live_progress_ok() is True
