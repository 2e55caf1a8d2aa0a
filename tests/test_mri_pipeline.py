"""MRI + PET through the core: `biokd preprocess oasis3` on generated NIfTI, the quick demo (teacher on MRI + PET,
MRI-only student distilled beside the student alone, threshold chosen on validation), ONNX export with parity."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from biokd.data.reader import ShardDataset
from biokd.export.parity import check_parity
from biokd.mri.synthetic import write_synthetic_oasis3


def test_preprocess_oasis3_cli_splits_by_subject_and_skips_visits_without_pet(tmp_path):
    drawn = write_synthetic_oasis3(tmp_path / "oasis3", n_subjects=9, seed=2, voxel_mm=8.0, missing_pet_volume=1)
    out = tmp_path / "store"
    args = ["preprocess", "oasis3", "--root", str(tmp_path / "oasis3"), "--out", str(out), "--skip-bad",
            "--set", "pixdim=[8.0, 8.0, 8.0]", "--set", "spatial_size=[16, 16, 16]", "--set", "n_folds=3"]  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "biokd.cli", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = pd.read_csv(out / "manifest.csv", dtype={"subject": str})
    report = json.loads((out / "report.json").read_text())
    # pet=require (default): the subject without a PET map has no visit left and is skipped, by name
    assert list(report["skipped"]) == [drawn[0].subject] and "SUVR map" in report["skipped"][drawn[0].subject]
    assert drawn[0].subject not in set(manifest["subject"]) and manifest["has_pet"].all()
    per_subject = manifest.groupby("subject")["split"].nunique()
    assert (per_subject == 1).all() and set(manifest["split"]) == {"train", "val", "test"}
    labels = {s.subject: s.label for s in drawn}
    assert (manifest["label"] == manifest["subject"].map(labels)).all()
    ds = ShardDataset(out, "test")
    item = ds[0]
    assert item["mri"].shape == (1, 16, 16, 16) and item["pet"].shape == (1, 16, 16, 16)
    assert ds.spec.target.kind == "binary" and item["pet"].abs().max() > 0
    assert "OASIS-3 visits" in result.stdout


def test_binary_parity_thresholds_the_logit_not_an_argmax_over_one_column():
    ref = np.array([[-2.0], [0.5], [1.5], [3.0]])
    flipped = ref.copy()
    flipped[1] = -0.5  # crosses a threshold at logit 0
    report = check_parity(ref, flipped, fmt="onnx-int8", precision="int8", task="binary")
    assert report.extra["class_agreement"] == pytest.approx(0.75) and not report.passed
    moved = check_parity(ref, flipped, fmt="onnx-int8", precision="int8", task="binary", decision_logit=1.0)
    assert moved.extra["class_agreement"] == 1.0 and moved.passed  # both below the chosen threshold
    old = check_parity(ref, flipped, fmt="onnx-int8", precision="int8", task="classification")
    assert old.extra["class_agreement"] == 1.0  # what argmax over one column gave: always agreeing


@pytest.mark.slow
def test_quick_demo_distils_and_exports(tmp_path):
    pytest.importorskip("onnxruntime")
    from biokd.export.run import export_run
    from biokd.mri.demo import QUICK, run_demo

    report = run_demo(tmp_path, QUICK)
    text = report.read_text()
    assert "GENERATED" in text and "NOT the released BiomedCLIP" in text
    metrics = json.loads((report.parent / "metrics.json").read_text())
    for name in ("teacher", "student (distilled)", "student (alone)"):
        rep = metrics[name]
        assert rep["threshold_source"] == "Youden's J on validation" and 0 < rep["threshold"] < 1
        assert "roc_curve" in rep and {"sensitivity", "specificity", "balanced_accuracy"} <= set(rep)
    student, teacher = metrics["student (distilled)"]["model"], metrics["teacher"]["model"]
    assert teacher["parameters"] > 10 * student["parameters"]
    assert (tmp_path / "runs" / "student" / "teacher_cache").is_dir()
    data = json.loads((tmp_path / "runs" / "teacher" / "data.json").read_text())
    assert (
        data["teacher_provenance"]["pretrained"] is True and "biomedclip-tiny" in data["teacher_provenance"]["weights"]
    )
    result = export_run(tmp_path / "runs" / "student", "onnx", n_heldout=8, measure=False)
    assert result.parity.passed and result.card["task"] == "binary"
    assert result.card["outputs"]["decision_threshold"] == pytest.approx(metrics["student"]["threshold"])
