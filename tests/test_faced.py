"""FACED: a generated release in the real layout (pickles of (28, 32, 7500) arrays, Recording_info.csv)."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import typer
from scipy.signal import resample
from typer.testing import CliRunner

from biokd.data.reader import WindowsDataset
from biokd.data.safe_pickle import load_numpy_pickle
from biokd.eeg.faced import (
    CHANNELS,
    CLASS_NAMES,
    FacedProtocol,
    preprocess_faced,
    read_recording_info,
    write_synthetic_faced,
)
from biokd.errors import ConfigError, DataError

SUBJECTS = [0, 1, 80, 100]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return write_synthetic_faced(tmp_path_factory.mktemp("faced") / "FACED", SUBJECTS, seed=3)


@pytest.fixture(scope="module")
def built(release, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faced-out")
    preprocess_faced(release, out, progress=False)
    return out


def _small_release(tmp_path: Path, subjects=(0, 1), **kwargs) -> Path:
    """A release whose arrays are too short to process: enough for checks that fail before loading."""
    return write_synthetic_faced(tmp_path / "FACED", subjects, n_samples=50, **kwargs)


class _Payload:
    """A pickle that, when loaded by ``pickle.load``, creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _py2_pickle(a: np.ndarray) -> bytes:
    """``a`` (little-endian float32, dims < 256) as Python 2's ``cPickle.dump(a, f, 2)`` writes it."""

    def py2_str(b: bytes) -> bytes:
        return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)

    head = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + py2_str(b"b") + b"\x87R"
    shape = b"(" + b"".join(b"K" + bytes([d]) for d in a.shape) + b"t"
    dtype = (
        b"cnumpy\ndtype\n" + py2_str(b"f4") + b"K\x00K\x01\x87R(K\x03" + py2_str(b"<")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )  # fmt: skip
    return head + b"(K\x01" + shape + dtype + b"\x89" + py2_str(a.tobytes()) + b"tb."


# --- windows, labels, splits --------------------------------------------------------------------------------


def test_window_and_label_counts(built):
    ds = WindowsDataset(built)
    manifest = ds.manifest
    assert len(ds) == len(SUBJECTS) * 28 * 3
    for subject, group in manifest.groupby("subject"):
        counts = group["label_name"].value_counts().to_dict()
        assert counts == {name: 12 if name == "neutral" else 9 for name in CLASS_NAMES}, subject
        assert sorted(group["run"].unique()) == list(range(1, 29))
        assert sorted(group["onset_s"].unique()) == [0.0, 10.0, 20.0]
    assert ds[0]["eeg"].shape == (32, 2000)
    clip_labels = manifest.drop_duplicates("run").set_index("run")["label"].to_dict()
    assert [clip_labels[c] for c in (1, 3, 4, 12, 13, 16, 17, 22, 25, 26, 28)] == [0, 0, 1, 3, 4, 4, 5, 6, 7, 8, 8]


def test_subject_splits_and_protocol(built):
    manifest = WindowsDataset(built).manifest
    splits = manifest.drop_duplicates("subject").set_index("subject")["split"].to_dict()
    assert splits == {"sub000": "train", "sub001": "train", "sub080": "val", "sub100": "test"}
    assert len(WindowsDataset(built, "val")) == 84
    protocol = json.loads((built / "protocol.json").read_text())
    assert protocol["dataset"] == "faced" and protocol["signal_key"] == "eeg"
    assert protocol["sfreq"] == 200.0 and protocol["n_times"] == 2000 and protocol["scale"] == 0.01
    assert protocol["ch_names"] == list(CHANNELS) and protocol["ch_names"][-2:] == ["A2", "A1"]
    assert protocol["class_names"] == list(CLASS_NAMES)


def test_windows_are_the_resampled_clip_in_units_of_100_uv(release, built):
    with open(release / "Processed_data" / "sub080.pkl", "rb") as fh:
        source = pickle.load(fh)  # our own generated file
    clip5 = resample(source[4].astype(np.float64), 6000, axis=-1)
    ds = WindowsDataset(built)
    rows = ds.manifest.index[(ds.manifest["subject"] == "sub080") & (ds.manifest["run"] == 5)].tolist()
    assert len(rows) == 3
    for k, row in enumerate(rows):
        expected = clip5[:, 2000 * k : 2000 * (k + 1)] * 0.01
        np.testing.assert_allclose(ds[row]["eeg"].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_protocol_settings_change_windows(release, tmp_path):
    protocol = FacedProtocol(sfreq=250.0, window_seconds=4.0, stride_seconds=2.0, channels=("Fz", "Cz", "Pz"))
    preprocess_faced(release, tmp_path, subjects=["sub001"], protocol=protocol, progress=False)
    ds = WindowsDataset(tmp_path)
    assert len(ds) == 28 * 14 and ds[0]["eeg"].shape == (3, 1000)
    with open(release / "Processed_data" / "sub001.pkl", "rb") as fh:
        source = pickle.load(fh)
    np.testing.assert_allclose(ds[1]["eeg"].numpy(), source[0, [2, 11, 20], 500:1500] * 0.01, rtol=1e-5)


def test_the_planted_classes_are_learnable(built):
    """The generator's class signal shows in band power: nearest-centroid on train beats chance on test."""
    ds = WindowsDataset(built)
    x = np.stack([ds[i]["eeg"].numpy() for i in range(len(ds))])
    power = np.log(np.abs(np.fft.rfft(x, axis=-1)) ** 2 + 1e-12)
    bands = power[..., 20:520].reshape(*power.shape[:2], 50, 10).mean(-1).reshape(len(ds), -1)
    y = ds.labels
    train = (ds.manifest["split"] != "test").to_numpy()
    centroids = np.stack([bands[train & (y == c)].mean(0) for c in range(9)])
    pred = np.argmin(((bands[~train, None] - centroids) ** 2).sum(-1), axis=1)
    assert (pred == y[~train]).mean() > 0.5  # chance is about 0.11


def test_both_folder_spellings_and_cli(tmp_path):
    release = write_synthetic_faced(tmp_path / "FACED", [5], folder="Processed_Data")
    app = typer.Typer()
    from biokd.eeg import cmd_faced

    app.command()(cmd_faced.preprocess)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["--root", str(release), "--out", str(out), "--set", "window_seconds=15"])
    assert result.exit_code == 0, result.output
    assert "Processed_Data/" in result.output and "1 processed" in result.output
    assert "subjects from Processed_Data/ cross-checked with Recording_info.csv" in result.output
    assert len(WindowsDataset(out)) == 28 * 2
    bad = CliRunner().invoke(app, ["--root", str(release), "--out", str(out), "--set", "sfrq=250"])
    assert isinstance(bad.exception, ConfigError) and "Did you mean 'sfreq'" in str(bad.exception)


# --- the pickle loader -------------------------------------------------------------------------------------


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    control = tmp_path / "control-marker"
    payload = pickle.dumps(_Payload(control))
    pickle.loads(payload)  # the payload is real: plain pickle runs it
    assert control.exists()

    release = _small_release(tmp_path, (0,))
    marker = tmp_path / "marker"
    (release / "Processed_data" / "sub000.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(DataError, match=r"sub000\.pkl: refused to load builtins\.exec") as err:
        preprocess_faced(release, tmp_path / "out", progress=False)
    assert "not executed" in str(err.value) or "nothing in it was executed" in str(err.value)
    assert not marker.exists()


def test_pickle_of_a_list_of_arrays_is_refused(tmp_path):
    path = tmp_path / "sub000.pkl"
    path.write_bytes(pickle.dumps([np.zeros((28, 32, 7500), np.float32)]))
    with pytest.raises(DataError, match=r"sub000\.pkl: the pickle holds a list, not a numpy array"):
        load_numpy_pickle(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_arrays_of_any_pickle_protocol_load(tmp_path, protocol):
    a = np.random.default_rng(protocol).normal(size=(2, 3, 4))
    (tmp_path / "a.pkl").write_bytes(pickle.dumps(a, protocol=protocol))
    np.testing.assert_array_equal(load_numpy_pickle(tmp_path / "a.pkl"), a)


def test_python2_pickle_loads_through_latin1(tmp_path):
    a = np.random.default_rng(0).normal(size=(3, 5)).astype("<f4")
    (tmp_path / "py2.pkl").write_bytes(_py2_pickle(a))
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(_py2_pickle(a))  # plain pickle needs an encoding for Python 2 byte strings
    np.testing.assert_array_equal(load_numpy_pickle(tmp_path / "py2.pkl"), a)


# --- bad releases ------------------------------------------------------------------------------------------


def test_wrong_shape_names_file_and_shapes(tmp_path):
    release = _small_release(tmp_path, (0,))
    with pytest.raises(DataError, match=r"sub000\.pkl: array of shape \(28, 32, 50\); expected \(28, 32, 7500\)"):
        preprocess_faced(release, tmp_path / "out", progress=False)


def test_missing_file_listed_in_csv(tmp_path):
    release = _small_release(tmp_path, (0, 1, 2))
    (release / "Processed_data" / "sub001.pkl").unlink()
    with pytest.raises(DataError, match=r"sub001\.pkl: listed in Recording_info\.csv but missing"):
        preprocess_faced(release, tmp_path / "out", progress=False)


def test_requested_subject_without_file(tmp_path):
    release = _small_release(tmp_path, (0,))
    with pytest.raises(DataError, match=r"Processed_data/sub007\.pkl: missing"):
        preprocess_faced(release, tmp_path / "out", subjects=[7], progress=False)


def test_file_not_in_csv(tmp_path):
    release = _small_release(tmp_path, (0, 1))
    csv = release / "Recording_info.csv"
    csv.write_text("\n".join(line for line in csv.read_text().splitlines() if not line.startswith("sub001")))
    with pytest.raises(DataError, match=r"sub001\.pkl: sub001 is not listed in .*Recording_info\.csv"):
        preprocess_faced(release, tmp_path / "out", progress=False)


def test_subject_outside_the_protocol(tmp_path):
    release = _small_release(tmp_path, (0, 123))
    with pytest.raises(DataError, match=r"sub123\.pkl: sub123 is not one of the protocol's subjects"):
        preprocess_faced(release, tmp_path / "out", progress=False)


def test_csv_without_needed_columns(tmp_path):
    release = _small_release(tmp_path, (0,))
    (release / "Recording_info.csv").write_text("sub,Age\nsub000,22\n")
    with pytest.raises(DataError, match=r"Recording_info\.csv: no sampling rate column"):
        read_recording_info(release)
    (release / "Recording_info.csv").write_text("Subject ID, Sample_rate\n0, 1000\n0, 1000\n")
    with pytest.raises(DataError, match=r"line 3: subject sub000 is listed twice"):
        read_recording_info(release)
    (release / "Recording_info.csv").unlink()
    with pytest.raises(DataError, match=r"Recording_info\.csv: missing"):
        read_recording_info(release)


def test_processed_data_alone_is_enough_and_the_report_says_so(tmp_path, built):
    """CBraMod's own script reads Processed_data/ only: without Recording_info.csv the files give the subjects."""
    release = write_synthetic_faced(tmp_path / "FACED", [0, 1], seed=5)
    (release / "Recording_info.csv").unlink()
    report = preprocess_faced(release, tmp_path / "out", progress=False)
    assert report.processed == ["sub000", "sub001"] and report.n_windows == 2 * 28 * 3
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["recording_info_csv"] is None and saved["recording_info"] == {}
    assert saved["subject_list"].startswith("Processed_data/ alone (Recording_info.csv absent")
    with_csv = json.loads((built / "report.json").read_text())  # the same layout with the CSV: it is used
    assert with_csv["recording_info_csv"].endswith("Recording_info.csv")
    assert with_csv["subject_list"] == "Processed_data/ cross-checked with Recording_info.csv"
    assert sorted(with_csv["recording_info"]) == [f"sub{i:03d}" for i in SUBJECTS]


def test_skip_bad_skips_counts_and_reports(tmp_path):
    mixed = write_synthetic_faced(tmp_path / "FACED", [0], seed=1)
    folder = mixed / "Processed_data"
    marker = tmp_path / "marker"
    (folder / "sub002.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    (folder / "sub003.pkl").write_bytes(pickle.dumps(np.zeros((28, 30, 7500), np.float32)))
    (folder / "sub004.pkl").write_bytes(pickle.dumps(np.zeros((28, 32, 7500), np.float32)))
    csv = mixed / "Recording_info.csv"
    csv.write_text(csv.read_text() + "".join(f"sub{i:03d},22,F,250,uV\n" for i in (2, 3, 5)))
    report = preprocess_faced(mixed, tmp_path / "out", skip_bad=True, progress=False)
    assert report.processed == ["sub000"]
    assert sorted(report.skipped) == ["sub002", "sub003", "sub004", "sub005"]
    assert "refused to load builtins.exec" in report.skipped["sub002"]
    assert "(28, 30, 7500)" in report.skipped["sub003"]
    assert "not listed" in report.skipped["sub004"] and "missing" in report.skipped["sub005"]
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["n_skipped"] == 4 and saved["n_windows"] == 84
    assert not marker.exists()


def test_volts_are_flagged(tmp_path):
    release = write_synthetic_faced(tmp_path / "FACED", [0], noise_uv=1e-5, signal_uv=4e-6)
    report = preprocess_faced(release, tmp_path / "out", progress=False)
    assert "look like volts" in report.notes["sub000"]["suspect_units"]


def test_protocol_validation_and_raw_source(tmp_path):
    with pytest.raises(ConfigError, match="overlap"):
        FacedProtocol(val=(70, 99))
    with pytest.raises(ConfigError, match="not FACED channels"):
        FacedProtocol(channels=("Fz", "Fpz"))
    with pytest.raises(ConfigError, match="whole number of samples"):
        FacedProtocol(window_seconds=0.0025, sfreq=200.0)
    with pytest.raises(ConfigError, match="clip_seconds"):
        FacedProtocol(clip_seconds=2.0)  # only raw recordings may be cut shorter than the release's 30 s
    with pytest.raises(ConfigError, match="raw_aliases"):
        FacedProtocol(source="raw", raw_aliases=("Fpz=FPZ",))
    with pytest.raises(DataError, match=r"Data: missing"):
        preprocess_faced(tmp_path, tmp_path / "out", protocol=FacedProtocol(source="raw"), progress=False)
    # the raw-only settings stay out of a processed build's protocol (and so out of its shard hash)
    assert "raw_end_code" not in FacedProtocol().to_protocol()
    assert FacedProtocol(source="raw").to_protocol()["raw_end_code"] == 102


# --- raw recordings (Data/subNNN/data.bdf + evt.bdf) ---------------------------------------------------------

#: Recording labels in a cohort-1-like order (mastoids as HEOL/HEOR in the middle), upper case, plus an extra.
RAW_LABELS = [c.upper() for c in CHANNELS[:16]] + ["HEOL", "HEOR"] + [c.upper() for c in CHANNELS[16:30]] + ["ECG"]
VIDEO_ORDER = [int(v) for v in np.random.default_rng(0).permutation(28) + 1]  # presentation order


def _write_bdf(path: Path, signals: np.ndarray, fs: int, labels, annotations=()) -> None:
    import pyedflib

    writer = pyedflib.EdfWriter(str(path), len(labels), file_type=pyedflib.FILETYPE_BDFPLUS)
    try:
        writer.setSignalHeaders(
            [
                {"label": lab, "dimension": "uV", "sample_frequency": fs, "physical_max": 1000.0,
                 "physical_min": -1000.0, "digital_max": 8388607, "digital_min": -8388608}
                for lab in labels
            ]
        )  # fmt: skip
        for onset, code in annotations:
            writer.writeAnnotation(onset, -1, str(code))
        if len(labels):
            writer.writeSamples(list(signals))
    finally:
        writer.close()


def _raw_release(tmp_path: Path, fs: int = 250, drop_end_of=None, events_in_recording=False):
    """One subject, 28 videos of 3 s in ``VIDEO_ORDER``, 2 s apart; returns (root, signals µV, clip ends in s)."""
    root = tmp_path / "FACED"
    folder = root / "Data" / "sub000"
    folder.mkdir(parents=True)
    (root / "Recording_info.csv").write_text(f"sub,Age,Gender,Sampling Rate,Unit\nsub000,22,F,{fs},uV\n")
    events, ends, t = [(0.5, 100)], {}, 1.0
    for video in VIDEO_ORDER:
        events += [(t, video), (t + 0.5, 101)]
        ends[video] = t + 3.5
        if video != drop_end_of:
            events.append((t + 3.5, 102))
        t += 5.0
    n = round((t + 1.0) * fs)
    signals = np.random.default_rng(1).uniform(-200, 200, size=(len(RAW_LABELS), n))
    _write_bdf(folder / "data.bdf", signals, fs, RAW_LABELS, events if events_in_recording else ())
    if not events_in_recording:
        _write_bdf(folder / "evt.bdf", None, fs, [], events)
    return root, signals, ends


def test_raw_recording_gives_the_last_seconds_of_each_clip(tmp_path):
    root, signals, ends = _raw_release(tmp_path)
    protocol = FacedProtocol(source="raw", clip_seconds=2.0, sfreq=250.0, window_seconds=1.0)
    report = preprocess_faced(root, tmp_path / "out", protocol=protocol, progress=False)
    assert report.processed == ["sub000"]
    ds = WindowsDataset(tmp_path / "out")
    manifest = ds.manifest
    assert len(ds) == 28 * 2 and ds[0]["eeg"].shape == (32, 250)
    assert sorted(manifest["run"].unique()) == list(range(1, 29))
    counts = manifest["label_name"].value_counts().to_dict()
    assert counts == {name: 8 if name == "neutral" else 6 for name in CLASS_NAMES}
    rows = [RAW_LABELS.index(c.upper() if c not in ("A1", "A2") else {"A1": "HEOL", "A2": "HEOR"}[c]) for c in CHANNELS]
    for video in (VIDEO_ORDER[0], 13, 28):  # run = video id, whatever the presentation order
        stop = round(ends[video] * 250)
        for k, row in enumerate(manifest.index[manifest["run"] == video]):
            expected = signals[rows, stop - 500 + 250 * k : stop - 250 + 250 * k] * 0.01
            np.testing.assert_allclose(ds[row]["eeg"].numpy(), expected, atol=1e-5)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["processed_dir"] == "Data"


def test_raw_recording_is_resampled_to_250_hz(tmp_path):
    from scipy.signal import resample_poly

    from biokd.eeg.faced import read_raw_clips

    root, signals, ends = _raw_release(tmp_path, fs=500, events_in_recording=True)
    protocol = FacedProtocol(source="raw", clip_seconds=2.0, sfreq=250.0, window_seconds=1.0)
    clips = read_raw_clips([root / "Data" / "sub000" / "data.bdf"], protocol)
    assert clips.shape == (28, 32, 500)
    stop = round(ends[5] * 500)
    expected = resample_poly(
        signals[[RAW_LABELS.index("FP1"), RAW_LABELS.index("HEOL")], stop - 1000 : stop], 1, 2, axis=-1
    )
    np.testing.assert_allclose(clips[4, [0, 31]], expected, atol=1e-3)


def test_raw_recording_with_missing_trigger_names_the_event_file(tmp_path):
    root, _, _ = _raw_release(tmp_path, drop_end_of=7)
    protocol = FacedProtocol(source="raw", clip_seconds=2.0, sfreq=250.0, window_seconds=1.0)
    with pytest.raises(DataError, match=r"sub000/evt\.bdf: no clip-end trigger for videos \[7\]"):
        preprocess_faced(root, tmp_path / "out", protocol=protocol, progress=False)
