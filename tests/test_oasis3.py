"""OASIS-3 loader: both layouts, the tables, visit matching, amyloid labels, MONAI volumes, bad input, splits."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from biokd.errors import DataError
from biokd.mri.oasis3 import (
    CENTILOID_TABLE,
    CLINICAL_TABLE,
    PUP_TABLE,
    Oasis3Protocol,
    PetSession,
    assign_folds,
    data_spec,
    find_subjects,
    fold_splits,
    load_volume,
    match_visit,
    pet_sessions,
    process_subject,
)

SMALL = Oasis3Protocol(pixdim=(4.0, 4.0, 4.0), spatial_size=(12, 12, 12), pet="optional")
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])


def _volume(seed: int = 0, shape=(10, 12, 10)) -> np.ndarray:
    vol = np.random.default_rng(seed).random(shape).astype(np.float32) + 0.5
    vol[2:4, 5:7, 4:6] = 5.0  # a bright marker, on the left of a RAS image
    return vol


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _tables(folder: Path, centiloid: list[tuple], pup: list[tuple] = (), clinical: list[tuple] = ()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cols = ["subject_id", "oasis_session_id", "tracer", "Centiloid_fSUVR_rsf_TOT_CORTMEAN"]
    pd.DataFrame(centiloid, columns=cols).to_csv(folder / CENTILOID_TABLE, index=False)
    cols = ["PUP_PUPTIMECOURSEDATA ID", "tracer", "MRId", "PET_fSUVR_rsf_TOT_CORTMEAN"]
    pd.DataFrame(list(pup), columns=cols).to_csv(folder / PUP_TABLE, index=False)
    cols = ["OASISID", "OASIS_session_label", "days_to_visit", "MMSE", "CDRTOT", "CDRSUM", "dx1"]
    pd.DataFrame(list(clinical), columns=cols).to_csv(folder / CLINICAL_TABLE, index=False)


def _pet(days: int, tracer: str = "AV45", cl: float = 30.0) -> PetSession:
    return PetSession(f"OAS30001_{tracer}_d{days:04d}", "OAS30001", tracer, days, cl)


# ---------------------------------------------------------------- visit matching


def test_match_visit_boundaries():
    assert match_visit(1000, [_pet(1365)], 365).days == 1365  # exactly 365 days after: kept
    assert match_visit(1000, [_pet(635)], 365).days == 635  # exactly 365 days before: kept
    assert match_visit(1000, [_pet(1366), _pet(634)], 365) is None  # one day too far either way: none
    assert match_visit(1000, [], 365) is None
    assert match_visit(1000, [_pet(1300), _pet(900)], 365).days == 900  # two candidates: the nearer
    assert match_visit(1000, [_pet(1100), _pet(900)], 365).days == 900  # a tie: the earlier
    assert match_visit(1000, [_pet(1010)], 5) is None  # the window is a parameter


def test_tables_join_on_their_own_keys_and_thresholds_per_tracer(tmp_path):
    _tables(
        tmp_path,
        [
            ("OAS30001", "OAS30001_PIB_d0100", "PIB", 18.0),
            ("OAS30001", "OAS30001_AV45_d2430", "AV45", 18.0),
            ("OAS30001", "OAS30001_FDG_d0500", "FDG", 1.0),
            ("OAS30002", "OAS30002_AV45_d0000", "AV45", 50.0),
        ],
        pup=[("OAS30001_AV45_PUPTIMECOURSE_d2430", "AV45", "OAS30001_MR_d2400", 1.21)],
    )
    notes: dict = {}
    sessions = pet_sessions("OAS30001", tmp_path / CENTILOID_TABLE, Oasis3Protocol(), tmp_path / PUP_TABLE, (), notes)
    assert [(s.tracer, s.days, s.suvr) for s in sessions] == [("PIB", 100, None), ("AV45", 2430, 1.21)]
    assert notes["pet_sessions_other_tracer"] == ["OAS30001_FDG_d0500"]
    p = Oasis3Protocol()
    # 18 CL: positive with the PIB default (16.4), negative with the AV45 default (20.6); equal is negative.
    assert p.is_positive("PIB", 18.0) and not p.is_positive("AV45", 18.0)
    assert not p.is_positive("AV45", 20.6) and p.is_positive("AV45", 20.61)
    assert Oasis3Protocol(thresholds={"PIB": 20.6, "AV45": 20.6}).is_positive("PIB", 18.0) is False


# ---------------------------------------------------------------- layouts and items


def _download_layout(root: Path) -> None:
    for days, seed in ((129, 0), (900, 1), (3000, 2)):
        name = f"sub-OAS30001_ses-d{days:04d}_run-01_T1w.nii.gz"
        _nifti(root / f"OAS30001_MR_d{days:04d}" / "anat1" / name, _volume(seed))
    _nifti(root / "OAS30001_MR_d0129" / "anat2" / "sub-OAS30001_ses-d0129_run-01_T2w.nii.gz", _volume(9))
    pet = root / "OAS30001_AV45_PUPTIMECOURSE_d0400" / "pet_proc" / "OAS30001_AV45_d0400n_msum_SUVR.nii.gz"
    _nifti(pet, _volume(5) * 2)
    _tables(
        root / "OASIS3_data_files" / "csv",
        [("OAS30001", "OAS30001_AV45_d0400", "AV45", 35.5), ("OAS30001", "OAS30001_PIB_d1200", "PIB", 10.0)],
        pup=[("OAS30001_AV45_PUPTIMECOURSE_d0400", "AV45", "OAS30001_MR_d0129", 1.47)],
        clinical=[("OAS30001", "OAS30001_UDSb4_d0100", 100, 29, 0.5, 0.5, "uncertain dementia")],
    )


def test_download_layout_items(tmp_path):
    _download_layout(tmp_path)
    found = find_subjects(tmp_path, SMALL)
    assert list(found) == ["OAS30001"]
    names = [p.name for p in found["OAS30001"]]
    assert "sub-OAS30001_ses-d0129_run-01_T2w.nii.gz" not in names  # T1w only
    items = process_subject("OAS30001", found["OAS30001"], SMALL)
    assert items.arrays["mri"].shape == (2, 1, 12, 12, 12) and items.arrays["pet"].shape == (2, 1, 12, 12, 12)
    first, second = items.rows
    assert (first["session"], first["pet_session"]) == ("OAS30001_MR_d0129", "OAS30001_AV45_d0400")
    assert (first["days_apart"], first["tracer"], first["centiloid"]) == (271, "AV45", 35.5)
    assert (first["label"], first["label_name"]) == (1, "amyloid_positive")
    assert first["suvr"] == 1.47 and first["cdr"] == 0.5 and first["has_pet"] is True
    # d0900 is 500 days from d0400 and 300 days from the PIB session at d1200, which has no SUVR map
    assert (second["pet_session"], second["label"], second["has_pet"]) == ("OAS30001_PIB_d1200", 0, False)
    assert second["cdr"] is None  # the clinical visit is 800 days away
    assert not items.arrays["pet"][1].any() and items.arrays["pet"][0].max() > 1.5  # PET kept in SUVR units
    assert items.arrays["mri"].max() == pytest.approx(1.0)  # MRI scaled to [0, 1]
    assert items.notes["mr_sessions_without_pet"] == ["OAS30001_MR_d3000"]
    assert items.notes["n_visits_without_pet_volume"] == 1

    required = process_subject("OAS30001", found["OAS30001"], {**vars(SMALL), "pet": "require"})
    assert [r["session"] for r in required.rows] == ["OAS30001_MR_d0129"]
    assert required.notes["mr_sessions_without_pet_volume"] == ["OAS30001_MR_d0900"]
    off = process_subject("OAS30001", found["OAS30001"], {**vars(SMALL), "pet": "off"})
    assert set(off.arrays) == {"mri"} and [s["name"] for s in data_spec({"pet": "off"})["inputs"]] == ["mri"]


def test_bids_layout_gives_the_same_volume(tmp_path):
    vol = _volume(3)
    _nifti(tmp_path / "bids" / "sub-OAS30002" / "ses-d0010" / "anat" / "sub-OAS30002_ses-d0010_run-01_T1w.nii.gz", vol)
    _nifti(tmp_path / "dl" / "OAS30002_MR_d0010" / "anat1" / "sub-OAS30002_ses-d0010_T1w.nii.gz", vol)
    for layout in ("bids", "dl"):
        _tables(tmp_path / layout, [("OAS30002", "OAS30002_PIB_d0000", "PIB", 5.0)])
    items = {
        layout: process_subject("OAS30002", find_subjects(tmp_path / layout, SMALL)["OAS30002"], SMALL)
        for layout in ("bids", "dl")
    }
    assert items["bids"].rows[0]["session"] == items["dl"].rows[0]["session"] == "OAS30002_MR_d0010"
    np.testing.assert_array_equal(items["bids"].arrays["mri"], items["dl"].arrays["mri"])


def test_orientation_to_ras(tmp_path):
    vol = _volume(4)
    ras = load_volume(_nifti(tmp_path / "ras.nii.gz", vol), SMALL)
    las_affine = AFFINE.copy()
    las_affine[0, 0], las_affine[0, 3] = -4.0, 36.0  # x runs right to left; same world positions
    las = load_volume(_nifti(tmp_path / "las.nii.gz", vol[::-1].copy(), las_affine), SMALL)
    np.testing.assert_allclose(las, ras, atol=1e-5)
    marker = np.unravel_index(np.argmax(ras[0]), ras.shape[1:])
    assert marker[0] < 6  # the marker stays on the left half


def test_analyze_pair_is_readable(tmp_path):
    vol = _volume(6)
    img = nib.AnalyzeImage(vol[..., None], AFFINE)  # OASIS-1/2 files hold (x, y, z, 1)
    nib.save(img, str(tmp_path / "OAS1_0001_MR1_mpr-1_anon.hdr"))
    assert (tmp_path / "OAS1_0001_MR1_mpr-1_anon.img").is_file()
    out = load_volume(tmp_path / "OAS1_0001_MR1_mpr-1_anon.hdr", SMALL)
    assert out.shape == (1, 12, 12, 12) and out.max() == pytest.approx(1.0)


# ---------------------------------------------------------------- bad input


def test_truncated_gzip_names_the_file(tmp_path):
    good = _nifti(tmp_path / "good.nii.gz", _volume(0, (20, 20, 20)))
    raw = gzip.decompress(good.read_bytes())
    bad = tmp_path / "OAS30001_MR_d0001" / "anat1" / "sub-OAS30001_ses-d0001_T1w.nii.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    with pytest.raises(DataError, match=r"sub-OAS30001_ses-d0001_T1w\.nii\.gz") as err:
        load_volume(bad, SMALL)
    assert "cannot read" in str(err.value)


def test_four_d_volume_is_refused(tmp_path):
    path = _nifti(tmp_path / "bold.nii.gz", np.zeros((8, 8, 8, 5), np.float32))
    with pytest.raises(DataError, match=r"bold.nii.gz: expected one 3-D volume; got shape \(8, 8, 8, 5\)"):
        load_volume(path, SMALL)


def test_session_without_a_table_row_names_the_table(tmp_path):
    _nifti(tmp_path / "OAS30003_MR_d0100" / "anat1" / "sub-OAS30003_ses-d0100_T1w.nii.gz", _volume(0))
    _tables(tmp_path, [("OAS30003", "OAS30003_AV45_d0900", "AV45", 40.0)])  # 800 days away
    paths = find_subjects(tmp_path, SMALL)["OAS30003"]
    with pytest.raises(DataError, match=r"OASIS3_amyloid_centiloid.csv: subject OAS30003: no MR session \(d0100\)"):
        process_subject("OAS30003", paths, SMALL)


def test_missing_centiloid_names_the_file_and_session(tmp_path):
    _nifti(tmp_path / "OAS30004_MR_d0100" / "anat1" / "sub-OAS30004_ses-d0100_T1w.nii.gz", _volume(0))
    _tables(tmp_path, [("OAS30004", "OAS30004_AV45_d0200", "AV45", None)])
    paths = find_subjects(tmp_path, SMALL)["OAS30004"]
    with pytest.raises(DataError, match=r"OASIS3_amyloid_centiloid\.csv: OAS30004_AV45_d0200: Centiloid_fSUVR_rsf"):
        process_subject("OAS30004", paths, SMALL)


def test_missing_table_and_column_are_named(tmp_path):
    _nifti(tmp_path / "OAS30005_MR_d0100" / "anat1" / "sub-OAS30005_ses-d0100_T1w.nii.gz", _volume(0))
    with pytest.raises(DataError, match=r"no OASIS3_amyloid_centiloid\.csv here or below.*NITRC"):
        find_subjects(tmp_path, SMALL)
    pd.DataFrame({"subject_id": ["OAS30005"], "tracer": ["PIB"]}).to_csv(tmp_path / CENTILOID_TABLE, index=False)
    paths = find_subjects(tmp_path, SMALL)["OAS30005"]
    with pytest.raises(DataError, match=r"missing column\(s\) \['oasis_session_id'"):
        process_subject("OAS30005", paths, SMALL)


# ---------------------------------------------------------------- splits


def test_folds_by_subject_stratified_by_label():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        label = int(i % 3 == 0)
        rows += [{"subject": f"OAS3{i:04d}", "label": label} for _ in range(int(rng.integers(1, 4)))]
    folds = assign_folds(rows, n_folds=5, seed=0)
    assert len(folds) == 30 and set(folds.values()) == set(range(5))
    for fold in range(5):
        labels = {r["label"] for r in rows if folds[r["subject"]] == fold}
        assert labels == {0, 1}  # both classes in every fold (10 positive subjects over 5 folds)
    splits = fold_splits(folds, test_fold=2)
    assert not set(splits["train"]) & set(splits["test"]) and not set(splits["val"]) & set(splits["test"])
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == sorted(folds)
    assert assign_folds(rows, n_folds=5, seed=0) == folds
