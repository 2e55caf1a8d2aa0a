"""Generated OASIS-3 subjects: real NIfTI and table formats, read back by the loader, images tied to the label."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from biokd.mri.oasis3 import CENTILOID_TABLE, CLINICAL_TABLE, PUP_TABLE, Oasis3Protocol, find_subjects, process_subject
from biokd.mri.synthetic import write_synthetic_oasis3

PROTOCOL = Oasis3Protocol(pixdim=(8.0, 8.0, 8.0), spatial_size=(16, 16, 16), pet="optional")


@pytest.mark.parametrize("layout", ["download", "bids"])
def test_generated_subjects_read_back(tmp_path, layout):
    drawn = write_synthetic_oasis3(tmp_path, n_subjects=8, seed=1, voxel_mm=8.0, layout=layout)
    first = drawn[0]
    mri_dir = f"{first.subject}_MR_d{first.mr_days[0]:04d}" if layout == "download" else f"sub-{first.subject}"
    img = nib.load(next((tmp_path / mri_dir).rglob("*_T1w.nii.gz")))
    assert img.ndim == 3 and np.allclose(img.header.get_zooms(), 8.0)
    tables = tmp_path / "tables"
    assert list(pd.read_csv(tables / CENTILOID_TABLE).columns[:4]) == [
        "subject_id",
        "oasis_session_id",
        "tracer",
        "Centiloid_fSUVR_rsf_TOT_CORTMEAN",
    ]
    assert "PUP_PUPTIMECOURSEDATA ID" in pd.read_csv(tables / PUP_TABLE).columns
    assert "OASIS_session_label" in pd.read_csv(tables / CLINICAL_TABLE).columns

    found = find_subjects(tmp_path, PROTOCOL)
    assert sorted(found) == [s.subject for s in drawn]
    items = {s: process_subject(s, paths, PROTOCOL) for s, paths in found.items()}
    for subject in drawn:
        rows = items[subject.subject].rows
        assert {r["label"] for r in rows} == {subject.label}
        assert [r["centiloid"] for r in rows] == pytest.approx([subject.centiloid] * len(rows))
        assert PROTOCOL.is_positive(subject.tracer, subject.centiloid) == bool(subject.label)
    # the first subject has no SUVR map and an MR session 900 days after its PET session
    assert items[first.subject].notes["mr_sessions_without_pet"] == [f"{first.subject}_MR_d{first.pet_days + 900:04d}"]
    assert not any(r["has_pet"] for r in items[first.subject].rows)
    assert all(r["has_pet"] for s in drawn[1:] for r in items[s.subject].rows)


def test_images_depend_on_amyloid_status(tmp_path):
    drawn = write_synthetic_oasis3(tmp_path, n_subjects=12, seed=3, voxel_mm=8.0, missing_pet_volume=0)
    found = find_subjects(tmp_path, PROTOCOL)
    pet, mri = {0: [], 1: []}, {0: [], 1: []}
    for s in drawn:
        items = process_subject(s.subject, found[s.subject], PROTOCOL)
        pet[s.label].append(float(items.arrays["pet"][0].mean()))
        mri[s.label].append(float(items.arrays["mri"][0].mean()))
    assert pet[0] and pet[1]  # both classes drawn
    assert min(pet[1]) > max(pet[0])  # cortical uptake separates the classes in PET
    assert np.mean(mri[1]) < np.mean(mri[0])  # grey-matter loss darkens the MRI on average
