"""Simulated EEGMMIDB files: release format, exact class counts through the real loader, and the ERD."""

from __future__ import annotations

import json
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pyedflib
import pytest
from scipy.signal import welch

from biokd.eeg.physionet_mi import preprocess_physionet_mi, run_path
from biokd.eeg.synthetic import write_synthetic_eegmmidb

RUNS = (4, 6, 8, 10, 12, 14)
SUBJECTS = (1, 2, 3)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("synth")
    paths = write_synthetic_eegmmidb(root / "raw", subjects=SUBJECTS, n_trials_per_run=10, seed=7)
    assert paths == [run_path(root / "raw", s, r) for s in SUBJECTS for r in RUNS]
    preprocess_physionet_mi(root / "raw", root / "out", progress=False)
    return root / "raw", root / "out"


def test_files_match_the_release_format(generated: tuple[Path, Path], real_data: Path) -> None:
    raw_root, _ = generated
    real = pyedflib.EdfReader(str(real_data / "eegmmidb" / "S001" / "S001R04.edf"))
    fake = pyedflib.EdfReader(str(run_path(raw_root, 2, 6)))
    try:
        assert fake.getSignalLabels() == real.getSignalLabels()
        assert fake.filetype == real.filetype == pyedflib.FILETYPE_EDFPLUS
        assert fake.datarecord_duration == real.datarecord_duration == 1.0
        for key in ("dimension", "sample_frequency", "physical_max", "digital_max", "transducer"):
            assert fake.getSignalHeader(11)[key] == real.getSignalHeader(11)[key]
        assert fake.getHeader()["equipment"] == real.getHeader()["equipment"]
        onsets, durations, texts = fake.readAnnotations()
    finally:
        real.close()
        fake.close()
    assert list(texts[::2]) == ["T0"] * 10 and set(texts[1::2]) == {"T1", "T2"}
    np.testing.assert_allclose(durations[::2], 4.2)
    np.testing.assert_allclose(durations[1::2], 4.1)
    np.testing.assert_allclose(np.diff(onsets), np.tile([4.2, 4.1], 10)[:-1], atol=1e-3)

    raw = mne.io.read_raw_edf(run_path(raw_root, 2, 6), preload=True, verbose="error")
    assert raw.info["sfreq"] == 160.0
    uv = raw.get_data(units="uV")
    assert 8 < np.median(uv.std(axis=1)) < 60  # tens of µV, like scalp EEG
    assert np.abs(uv).max() < 300


def test_class_counts_through_the_real_loader(generated: tuple[Path, Path]) -> None:
    raw_root, out = generated
    expected = {"left_fist": 0, "right_fist": 0, "both_fists": 0, "both_feet": 0}
    for s in SUBJECTS:
        for run in RUNS:
            texts = list(mne.read_annotations(run_path(raw_root, s, run)).description)
            assert texts.count("T1") == texts.count("T2") == 5
            first, second = ("left_fist", "right_fist") if run in (4, 8, 12) else ("both_fists", "both_feet")
            expected[first] += texts.count("T1")
            expected[second] += texts.count("T2")
    manifest = pd.read_csv(out / "manifest.csv")
    assert manifest.groupby("label_name").size().to_dict() == expected
    assert len(manifest) == len(SUBJECTS) * len(RUNS) * 10


def test_event_related_desynchronisation(generated: tuple[Path, Path]) -> None:
    """Mu power drops over the hemisphere opposite the imagined hand, and at Cz for the feet."""
    _, out = generated
    names = json.loads((out / "protocol.json").read_text())["ch_names"]
    manifest = pd.read_csv(out / "manifest.csv", dtype={"subject": str})
    for subject in ("S001", "S002", "S003"):
        rows = manifest[manifest["subject"] == subject]
        x = np.load(out / "shards" / f"{subject}.eeg.npy")[rows["row"].to_numpy()]
        freqs, power = welch(x[:, :, 100:], fs=200, nperseg=200, axis=-1)
        mu = np.log(power[:, :, (freqs >= 8) & (freqs <= 13)].mean(axis=-1))
        labels = rows["label"].to_numpy()

        def mean(label: int, channel: str, mu=mu, labels=labels) -> float:
            return float(mu[labels == label, names.index(channel)].mean())

        assert mean(1, "C3") < mean(0, "C3") - 0.3  # right fist: left hemisphere ERD
        assert mean(0, "C4") < mean(1, "C4") - 0.3  # left fist: right hemisphere ERD
        assert mean(3, "Cz") < mean(2, "Cz") - 0.3  # feet: central ERD
        assert mean(3, "C3") > mean(2, "C3") + 0.3  # feet spare the hand areas; both fists do not


def test_same_seed_same_files_and_subjects_differ(tmp_path: Path) -> None:
    a = write_synthetic_eegmmidb(tmp_path / "a", subjects=(5,), runs=(4,), n_trials_per_run=2, seed=11)
    b = write_synthetic_eegmmidb(tmp_path / "b", subjects=(5,), runs=(4,), n_trials_per_run=2, seed=11)
    c = write_synthetic_eegmmidb(tmp_path / "c", subjects=(5,), runs=(4,), n_trials_per_run=2, seed=12)
    assert a[0].read_bytes() == b[0].read_bytes()
    assert a[0].read_bytes() != c[0].read_bytes()
    with pytest.raises(ValueError, match="at least 2"):
        write_synthetic_eegmmidb(tmp_path / "d", subjects=(5,), n_trials_per_run=1)


def test_128hz_subject(tmp_path: Path) -> None:
    (path,) = write_synthetic_eegmmidb(tmp_path, subjects=(88,), runs=(4,), n_trials_per_run=4, sfreq=128)
    raw = mne.io.read_raw_edf(path, verbose="error")
    assert raw.info["sfreq"] == 128.0 and raw.n_times % 128 == 0
    assert raw.annotations.description.tolist().count("T0") == 4
