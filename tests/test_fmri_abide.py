"""ABIDE reader: real phenotypic table subsets, the real .1D file, both layouts, bad input, bad-ROI policies."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from biokd.errors import ConfigError, DataError
from biokd.fmri.abide import (
    ATLAS_ROIS,
    AbideProtocol,
    find_subjects,
    plan_roi_exclusion,
    process_subject,
    read_phenotypic,
    read_roi_timeseries,
    subset_counts,
    survey,
)
from biokd.fmri.synthetic import roi_path, write_roi_file, write_synthetic_abide

SMALL = AbideProtocol(atlas="rois_aal")


def test_real_phenotypic_subsets(real_data: Path) -> None:
    table = read_phenotypic(real_data / "abide" / "Phenotypic_V1_0b_preprocessed1.csv")
    counts = subset_counts(table)
    assert counts == {
        "rows": 1112,
        "with_files": 1035,
        "quality_checked": 871,
        "with_files_mean_fd_below_0.2": 884,
        "sites": 20,
    }
    from biokd.fmri.abide import select_phenotypes

    qc = select_phenotypes(table, AbideProtocol(subset="quality_checked"))
    assert (qc["DX_GROUP"] == 1).sum() == 403 and (qc["DX_GROUP"] == 2).sum() == 468
    nyu = select_phenotypes(table, AbideProtocol(sites=("NYU",)))
    assert len(nyu) == 175


def test_real_roi_file(real_data: Path) -> None:
    ts, labels = read_roi_timeseries(real_data / "abide" / "Caltech_0051456_rois_aal.1D", ATLAS_ROIS["rois_aal"])
    assert ts.shape == (145, 116)
    assert labels[:3] == ["2001", "2002", "2101"] and len(labels) == 116
    assert 1000 < np.median(ts) < 20000  # raw scanner scale


@pytest.mark.parametrize("layout", ["nilearn", "pcp"])
def test_both_layouts_and_process(tmp_path: Path, layout: str) -> None:
    gen = write_synthetic_abide(tmp_path, n_sites=2, subjects_per_site=3, atlas="rois_aal", layout=layout, seed=1)
    info = survey(tmp_path, SMALL)
    assert info.layout == layout
    assert sorted(info.subjects) == sorted(gen.files)
    assert info.counts["table_rows"] == 8 and info.counts["subjects"] == 6  # 2 no_filename rows
    subject = sorted(info.subjects)[0]
    items = process_subject(subject, info.subjects[subject], SMALL.to_dict())
    fc = items.arrays["fc"]
    assert fc.shape == (1, 116, 116) and fc.dtype == np.float32
    np.testing.assert_allclose(np.diagonal(fc[0]), 1.0, atol=1e-6)
    row = items.rows[0]
    assert row["subject"] == subject and row["site"] in gen.sites and row["label_name"] in ("autism", "control")
    assert row["label"] == (1 if row["label_name"] == "autism" else 0)
    assert row["sex"] in ("M", "F") and row["n_timepoints"] == gen.sites[row["site"]]["n_timepoints"]
    # the same root also found when pointing at the layout folder itself
    inner = tmp_path / ("ABIDE_pcp" if layout == "nilearn" else "Outputs")
    assert sorted(find_subjects(inner, SMALL, gen.phenotypic)) == sorted(gen.files)


def test_filters_on_generated_table(tmp_path: Path) -> None:
    write_synthetic_abide(tmp_path, n_sites=2, subjects_per_site=10, atlas="rois_aal", seed=2)
    full = survey(tmp_path, SMALL)
    qc = survey(tmp_path, dataclasses.replace(SMALL, subset="quality_checked"))
    assert qc.counts["subjects"] + qc.counts["excluded_by_filters"] == full.counts["subjects"] == 20
    assert qc.counts["excluded_by_filters"] > 0
    site = survey(tmp_path, dataclasses.replace(SMALL, sites=("SITE_A",)))
    assert site.counts["subjects"] == 10


def _one_subject(tmp_path: Path) -> dict[str, list[Path]]:
    write_synthetic_abide(tmp_path, n_sites=1, subjects_per_site=2, atlas="rois_aal", seed=3)
    return find_subjects(tmp_path, SMALL)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("#1\t#2\n", "only a header"),
        ("#1\t#2\n1\t2\n3\t4\n", "116"),
        ("\t".join(f"#{i}" for i in range(116)) + "\n" + "\t".join(["1.0"] * 115 + ["abc"]) + "\n", "non-numeric"),
    ],
)
def test_bad_roi_files(tmp_path: Path, content: str, message: str) -> None:
    subjects = _one_subject(tmp_path)
    subject = sorted(subjects)[0]
    subjects[subject][0].write_text(content)
    with pytest.raises(DataError, match=message) as err:
        process_subject(subject, subjects[subject], SMALL)
    assert subject in str(err.value)


def test_subject_not_in_table_and_no_filename(tmp_path: Path) -> None:
    _one_subject(tmp_path)
    ts = np.random.default_rng(0).standard_normal((50, 116))
    folder = roi_path(tmp_path, "x", "rois_aal", "cpac", "filt_noglobal", "pcp").parent
    write_roi_file(folder / "Stranger_0059999_rois_aal.1D", ts)
    write_roi_file(folder / "no_filename_rois_aal.1D", ts)
    info = survey(tmp_path, SMALL)
    assert sorted(info.not_in_table) == ["Stranger_0059999", "no_filename"]
    with pytest.raises(DataError, match="not in the phenotypic table") as err:
        process_subject("Stranger_0059999", info.subjects["Stranger_0059999"], SMALL)
    assert "Stranger_0059999_rois_aal.1D" in str(err.value)
    with pytest.raises(DataError, match="no_filename"):
        process_subject("no_filename", info.subjects["no_filename"], SMALL)


def test_missing_root_names_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"ABIDE_pcp/cpac/filt_noglobal/<FILE_ID>_rois_aal\.1D"):
        find_subjects(tmp_path, SMALL)
    with pytest.raises(ConfigError, match="ccs"):
        AbideProtocol(pipeline="css")


def _plant_bad_column(path: Path, column: int, nan: bool) -> None:
    ts, labels = read_roi_timeseries(path)
    ts[:, column] = np.nan if nan else 5.0
    write_roi_file(path, ts, labels)


def test_bad_roi_policies(tmp_path: Path) -> None:
    subjects = _one_subject(tmp_path)
    a, b = sorted(subjects)
    _plant_bad_column(subjects[a][0], 3, nan=False)  # constant column
    _plant_bad_column(subjects[b][0], 7, nan=True)  # NaN column
    label3, label7 = str(2004), str(2008)

    with pytest.raises(DataError, match=label3):
        process_subject(a, subjects[a], dataclasses.replace(SMALL, bad_roi="fail"))

    dropped = process_subject(a, subjects[a], SMALL)  # drop_subject (default): zero items, named in notes
    assert dropped.arrays["fc"].shape[0] == 0 and dropped.rows == []
    assert label3 in dropped.notes["dropped"][a] and dropped.notes["bad_rois"] == {a: [label3]}

    proto = dataclasses.replace(SMALL, bad_roi="drop_roi")
    with pytest.raises(DataError, match="plan_roi_exclusion"):
        process_subject(a, subjects[a], proto)
    planned = plan_roi_exclusion(subjects, proto)
    assert planned.excluded_rois == (label3, label7)
    for subject in (a, b):
        items = process_subject(subject, subjects[subject], planned.to_dict())
        assert items.arrays["fc"].shape == (1, 114, 114)
        assert np.isfinite(items.arrays["fc"]).all()
        assert label3 not in items.notes["roi_labels"] and label7 not in items.notes["roi_labels"]
