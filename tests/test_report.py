"""Reports: metrics.json, report.md and a self-contained report.html with tables, notes and figures."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from matplotlib.figure import Figure

from biokd.metrics import classification_report
from biokd.report import (
    Report,
    comparison_rows,
    format_ci,
    plot_confusion_matrix,
    plot_layer_weights_per_class,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _model(seed: int, skill: float):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3))
    logits[np.arange(300), y] += skill
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    subjects = rng.integers(0, 10, 300)
    return classification_report(y, prob, subjects, class_names=["rest", "left", "right"], n_boot=100)


def test_format_ci():
    assert format_ci(0.61234, [0.55, 0.6712]) == "0.612 [0.550, 0.671]"
    assert format_ci(0.5, None, digits=2) == "0.50"
    assert format_ci(None, [0.1, 0.2]) == "n/a"


def test_write_report_compares_models_with_cis_and_figures(tmp_path):
    teacher, student = _model(0, 2.0), _model(1, 1.0)
    costs = {"teacher": {"parameters": 4_924_000, "MFLOPs": 318.9}, "student": {"parameters": 125_000}}
    paths = write_report(
        tmp_path,
        "teacher vs student",
        {"teacher": teacher, "student": student},
        extra=costs,
        notes=["the teacher was not pretrained; data generated"],
    )
    md = paths["md"].read_text()
    page = paths["html"].read_text()
    saved = json.loads(paths["json"].read_text())
    assert paths["json"].name == "metrics.json"

    expected = format_ci(student["balanced_accuracy"], student["ci"]["balanced_accuracy"])
    assert re.fullmatch(r"0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]", expected)
    for text in (md, page):
        assert expected in text
        assert format_ci(teacher["cohen_kappa"], teacher["ci"]["cohen_kappa"]) in text
        assert "4,924,000" in text and "318.9" in text
        assert "the teacher was not pretrained; data generated" in text
    student_row = next(line for line in md.splitlines() if line.startswith("| student"))
    assert student_row.count("|") == 7 and student_row.rstrip().endswith("| 125,000 |  |")

    assert saved["student"]["balanced_accuracy"] == student["balanced_accuracy"]
    assert saved["tables"]["models"][0]["model"] == "teacher"
    assert saved["notes"] == ["the teacher was not pretrained; data generated"]

    pngs = sorted((tmp_path / "figures").glob("*.png"))
    assert [p.name for p in pngs] == ["confusion-matrix-student.png", "confusion-matrix-teacher.png"]
    for png in pngs:
        assert png.read_bytes().startswith(PNG_MAGIC)
        assert f"figures/{png.name}" in md
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == 2 and all(base64.b64decode(e).startswith(PNG_MAGIC) for e in embedded)
    assert "figures/" not in page  # the HTML needs no file beside it


def test_report_blocks_escaping_and_nan(tmp_path):
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    report = Report("glucose <demo>")
    report.add_text("Clarke zone A: 82%", heading="error grid")
    report.add_table("regression", [{"model": "GlucoNet", "RMSE mg/dL": 21.5, "MARD %": float("nan")}])
    report.add_figure("Clarke error grid", fig, caption="30-min horizon")
    report.add_json("regression", {"rmse": np.float32(21.5), "mard": float("nan"), "horizons": np.array([30, 60])})
    paths = report.write(tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert saved["regression"] == {"rmse": 21.5, "mard": None, "horizons": [30, 60]}
    assert "glucose &lt;demo&gt;" in paths["html"].read_text()
    md = paths["md"].read_text()
    assert "| GlucoNet | 21.5 | n/a |" in md and "30-min horizon" in md and "## error grid" in md
    assert (tmp_path / "figures" / "clarke-error-grid.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="reserved"):
        report.add_json("tables", {})
    with pytest.raises(ValueError, match="already"):
        report.add_figure("Clarke error grid", fig)


def test_comparison_rows_without_ci():
    rows = comparison_rows({"m": {"balanced_accuracy": 0.5, "cohen_kappa": None, "f1_weighted": 0.25}})
    assert rows == [{"model": "m", "balanced acc.": "0.500", "Cohen's κ": "n/a", "weighted F1": "0.250"}]


def test_confusion_plot_has_counts_and_row_normalised_panels():
    fig = plot_confusion_matrix([[8, 2], [1, 9]], ["a", "b"])
    left, right = fig.axes[:2]
    assert sorted(t.get_text() for t in left.texts) == ["1", "2", "8", "9"]
    assert sorted(t.get_text() for t in right.texts) == ["0.10", "0.20", "0.80", "0.90"]


def test_layer_weights_per_class_shows_class_means():
    weights = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    fig = plot_layer_weights_per_class(weights, np.array([0, 0, 1]), ["anger", "joy", "fear"], ["L0", "L6", "L11"])
    image = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(image[0], [0.75, 0.25, 0.0])
    np.testing.assert_allclose(image[1], [0.0, 0.0, 1.0])
    assert np.ma.getmaskarray(image[2]).all() or np.isnan(np.asarray(image[2], dtype=float)).all()
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        plot_layer_weights_per_class(weights[:, :2], np.array([0, 0, 1]), ["a", "b"], ["L0", "L6", "L11"])


def test_a_second_report_in_the_same_folder_keeps_the_first(tmp_path):
    for stem, value in (("report", 1), ("report-test", 2)):
        fig = Figure()
        fig.subplots().bar([0], [value])
        Report(f"run {value}").add_figure("confusion", fig).add_json("value", value).write(tmp_path, stem=stem)
    assert json.loads((tmp_path / "metrics.json").read_text())["value"] == 1
    assert json.loads((tmp_path / "report-test.json").read_text())["value"] == 2
    assert "figures/confusion.png" in (tmp_path / "report.md").read_text()
    assert "figures/report-test-confusion.png" in (tmp_path / "report-test.md").read_text()
    assert (tmp_path / "figures" / "confusion.png").read_bytes() != (
        tmp_path / "figures" / "report-test-confusion.png"
    ).read_bytes()
    paths = Report("no json").write(tmp_path / "other", json_name=None)
    assert "json" not in paths and not (tmp_path / "other" / "metrics.json").exists()
