"""Subject-wise split helpers: every subject tested exactly once, never on both sides."""

from __future__ import annotations

import pytest

from biokd.errors import ConfigError, LeakageError
from biokd.splits import check_no_leakage, check_split_ranges, fixed_split, kfold_subjects, leave_site_out


def test_kfold_tests_each_subject_once_and_never_trains_on_it():
    subjects = [f"S{i:03d}" for i in range(1, 12)] * 3  # repeated, as sample-level lists are
    folds = list(kfold_subjects(subjects, 4, seed=1))
    assert len(folds) == 4
    tested = [s for f in folds for s in f["test"]]
    assert sorted(tested) == sorted(set(subjects))
    for fold in folds:
        assert not set(fold["train"]) & set(fold["test"])
        check_no_leakage(fold)
    assert folds == list(kfold_subjects(subjects, 4, seed=1))
    assert folds != list(kfold_subjects(subjects, 4, seed=2))
    with pytest.raises(ValueError, match=r"n_folds must be in \[2, 11\]"):
        list(kfold_subjects(subjects, 12))


def test_leave_site_out_holds_out_each_site():
    sites = {"a1": "Caltech", "a2": "Caltech", "b1": "NYU", "c1": "UCLA", "c2": "UCLA"}
    folds = dict(leave_site_out(sites))
    assert list(folds) == ["Caltech", "NYU", "UCLA"]
    assert folds["UCLA"] == {"train": ["a1", "a2", "b1"], "test": ["c1", "c2"]}


def test_fixed_ranges_and_their_validation():
    ranges = {"train": (1, 70), "val": (71, 89), "test": (90, 109)}
    assert [fixed_split(s, ranges) for s in (1, 70, 71, 109, 110)] == ["train", "train", "val", "test", None]
    with pytest.raises(ConfigError, match="split ranges train and val overlap"):
        check_split_ranges({"train": (1, 71), "val": (71, 89)})
    with pytest.raises(ConfigError, match=r"test: range \(9, 3\) is empty"):
        check_split_ranges({"test": (9, 3)})


def test_leakage_error_names_every_leaking_subject():
    with pytest.raises(LeakageError, match="subject S002 in test and train, subject S007 in train and val"):
        check_no_leakage({"train": ["S001", "S002", "S007"], "val": ["S007"], "test": ["S002"]})
