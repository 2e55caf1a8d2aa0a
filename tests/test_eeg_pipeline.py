"""The EEG job end to end on generated EEGMMIDB files: teacher fine-tune, distillation, report, evaluate."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from biokd.cli import app
from biokd.data.reader import WindowsDataset
from biokd.distill.router import CAPTION
from biokd.eeg.demo import MONTAGE, QUICK, run_eeg_demo
from biokd.eeg.physionet_mi import PhysionetMIProtocol, preprocess_physionet_mi
from biokd.errors import DataError
from biokd.models import load_run_model
from biokd.pipeline import check_fits

#: QUICK trains on 3 generated subjects, a smoke size whose scores sit at chance; with 6 training subjects (and
#: QUICK's epochs) the student learns, so the assertions below can fail for a real reason.
SIZE = replace(QUICK, subjects=10)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    report = run_eeg_demo(out, SIZE)
    return out, report


def test_demo_writes_side_by_side_report_with_honest_notes(demo):
    _, report = demo
    assert report.is_file()
    text = (report.parent / "report.md").read_text()
    assert "GENERATED" in text and "NOT pretrained" in text
    assert "| teacher |" in text and "| student (distilled) |" in text and "| student (alone) |" in text
    assert "bootstrap over" in text or "jackknife" in text
    metrics = json.loads((report.parent / "metrics.json").read_text())
    teacher, student = metrics["teacher"]["model"], metrics["student"]["model"]
    assert student["model"] == "MiC" and teacher["model"] == "CBraModTeacher"
    assert student["flops"] < teacher["flops"]
    for name in ("teacher", "student"):
        low, high = metrics[name]["ci"]["balanced_accuracy"]
        assert low <= metrics[name]["balanced_accuracy"] <= high
        assert metrics[name]["ci_unit"] == "subject"


def test_demo_terms_compare_the_signal_rate_view(demo):
    _, report = demo
    config = (report.parent / "config.yaml").read_text()
    assert "signal: eeg" in config
    history = json.loads((report.parent / "history.json").read_text())
    assert all(h["train_spectral"] > 0 and h["train_connectivity"] >= 0 for h in history)


def test_student_learns_under_distillation(demo):
    _, report = demo
    history = json.loads((report.parent / "history.json").read_text())
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert metrics["student"]["balanced_accuracy"] > 0.3  # four classes: chance is 0.25


def test_router_weights_are_reported_and_sum_to_one(demo):
    _, report = demo
    metrics = json.loads((report.parent / "metrics.json").read_text())
    weights = metrics["router_mean_weights"]["layers"]
    assert len(weights) == SIZE.teacher_layers and sum(weights) == pytest.approx(1.0, abs=1e-5)
    assert (report.parent / "figures" / "router-weights-per-class-layers.png").is_file()
    assert CAPTION in (report.parent / "report.md").read_text()  # says the layers are normalised before mixing
    meta = json.loads((report.parent / "teacher_cache" / "meta.json").read_text())
    assert meta["complete"] and meta["key"]["split"] == "train"


def test_evaluate_command_reproduces_the_run_metrics(demo):
    _, report = demo
    result = CliRunner().invoke(app, ["evaluate", str(report.parent), "--n-boot", "20"])
    assert result.exit_code == 0, result.output
    again = json.loads((report.parent / "metrics-test.json").read_text())
    first = json.loads((report.parent / "metrics.json").read_text())["student"]
    assert again["balanced_accuracy"] == pytest.approx(first["balanced_accuracy"])
    assert again["confusion_matrix"] == first["confusion_matrix"]


def test_data_that_does_not_fit_the_model_is_refused(demo, tmp_path):
    out, report = demo
    model = load_run_model(report.parent)
    other = tmp_path / "prep"
    protocol = PhysionetMIProtocol(channels=MONTAGE[:8], train=(1, 3), val=(4, 4), test=(5, 6))
    preprocess_physionet_mi(out / "eegmmidb", other, subjects=[1], protocol=protocol, progress=False)
    with pytest.raises(DataError, match="n_chans: model expects 16, data has 8"):
        check_fits(model, WindowsDataset(other, "train").spec)
    x = torch.zeros(1, 16, 800)
    assert model(x).shape == (1, 4)
