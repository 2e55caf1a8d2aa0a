"""PhysioNet-MI loader on the real subject-1 files, on the real damaged file and on generated layouts."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pyedflib
import pytest
import typer
from scipy import signal

from biokd.config import load_config
from biokd.data.reader import WindowsDataset
from biokd.eeg.physionet_mi import (
    RELEASE_CHANNELS,
    PhysionetMIProtocol,
    find_subjects,
    preprocess_physionet_mi,
    run_path,
)
from biokd.eeg.synthetic import write_synthetic_eegmmidb
from biokd.errors import BiokdError, ConfigError, DataError

IMAGERY_RUNS = (4, 6, 8, 10, 12, 14)
# CBraMod's labels, written out here rather than read from the module under test.
EXPECTED_LABEL = {**{(r, "T1"): 0 for r in (4, 8, 12)}, **{(r, "T2"): 1 for r in (4, 8, 12)}}
EXPECTED_LABEL |= {**{(r, "T1"): 2 for r in (6, 10, 14)}, **{(r, "T2"): 3 for r in (6, 10, 14)}}


def read_wfdb_events(path: Path) -> list[tuple[int, str]]:
    """Decode a WFDB (MIT format) ``.edf.event`` file: (sample, aux text) of each annotation."""
    data, i, t, out = path.read_bytes(), 0, 0, []
    while i + 2 <= len(data):
        (word,) = struct.unpack_from("<H", data, i)
        i += 2
        code, value = word >> 10, word & 0x3FF
        if code == 0 and value == 0:
            break
        if code == 59:  # SKIP: a 32-bit time step, high half first
            hi, lo = struct.unpack_from("<HH", data, i)
            i += 4
            step = (hi << 16) | lo
            t += step - (1 << 32) if step >= 1 << 31 else step
        elif code == 63:  # AUX: text attached to the previous annotation
            if out:
                out[-1] = (out[-1][0], data[i : i + value].decode())
            i += value + (value & 1)
        elif code not in (60, 61, 62):
            t += value
            out.append((t, ""))
    return [(s, text.split()[0]) for s, text in out if text[:2] in ("T0", "T1", "T2")]


def link_subject(root: Path, number: int, real: Path, runs=IMAGERY_RUNS) -> None:
    """Make subject ``number`` in ``root`` out of links to the real subject-1 runs."""
    for run in runs:
        target = run_path(root, number, run)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(real / "eegmmidb" / "S001" / f"S001R{run:02d}.edf")


@pytest.fixture(scope="module")
def real_built(real_data: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pmi-real")
    preprocess_physionet_mi(real_data / "eegmmidb", out, progress=False)
    return out


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pmi-synth")
    write_synthetic_eegmmidb(root, subjects=(1, 2), n_trials_per_run=3, seed=3)
    for name in ("RECORDS", "ANNOTATORS", "wfdbcal", "64_channel_sharbrough.pdf"):
        (root / name).write_text("not a subject\n")
    return root


def test_real_subject_gives_every_annotated_window(real_built: Path, real_data: Path) -> None:
    manifest = pd.read_csv(real_built / "manifest.csv", dtype={"subject": str, "session": str})
    expected = []
    for run in IMAGERY_RUNS:
        edf = real_data / "eegmmidb" / "S001" / f"S001R{run:02d}.edf"
        n_samples = pyedflib.EdfReader(str(edf)).getNSamples()[0]
        for sample, event in read_wfdb_events(edf.with_name(edf.name + ".event")):
            if event != "T0":
                assert sample + 4 * 160 <= n_samples  # every cue of subject 1 has its 4 s
                expected.append((run, round(sample / 160, 4), event, EXPECTED_LABEL[(run, event)]))
    got = list(zip(manifest["run"], manifest["onset_s"].round(4), manifest["event"], manifest["label"], strict=True))
    assert got == expected
    assert len(expected) == 90
    names = ["left_fist", "right_fist", "both_fists", "both_feet"]
    from_events = {names[k]: sum(e[3] == k for e in expected) for k in range(4)}
    assert manifest.groupby("label_name").size().to_dict() == from_events
    assert min(from_events.values()) >= 21  # 7 or 8 cues of each kind per run
    assert set(manifest["split"]) == {"train"} and set(manifest["subject"]) == {"S001"}
    assert list(manifest["session"].unique()) == [f"R{r:02d}" for r in IMAGERY_RUNS]

    x = np.load(real_built / "shards" / "S001.eeg.npy", mmap_mode="r")
    assert x.shape == (90, 64, 800) and x.dtype == np.float32
    # average reference survives the linear filters and resampling: channel mean ≈ 0 µV
    assert np.abs(np.asarray(x).mean(axis=1)).max() < 1e-2
    assert 5 < float(np.std(x)) < 200  # µV, not volts nor units of 100 µV


def test_real_windows_start_at_the_cue_in_microvolts(real_built: Path, real_data: Path) -> None:
    """Each window, brought back to 160 Hz, matches the raw EDF samples from its cue on (read with pyEDFlib)."""
    manifest = pd.read_csv(real_built / "manifest.csv")
    x = np.load(real_built / "shards" / "S001.eeg.npy", mmap_mode="r")
    reader = pyedflib.EdfReader(str(real_data / "eegmmidb" / "S001" / "S001R10.edf"))
    raw = np.stack([reader.readSignal(i) for i in range(64)])
    reader.close()
    raw -= raw.mean(axis=0)
    band = signal.butter(4, [2, 30], btype="band", fs=160, output="sos")
    c3 = RELEASE_CHANNELS.index("C3..")
    for k, row in manifest[manifest["run"] == 10].iterrows():
        start = round(row["onset_s"] * 160)
        ref = signal.sosfiltfilt(band, raw[c3, start : start + 640])
        got = signal.sosfiltfilt(band, signal.resample_poly(np.asarray(x[k, c3], dtype=float), 4, 5))
        assert np.corrcoef(ref, got)[0, 1] > 0.98
        assert 0.9 < got.std() / ref.std() < 1.1


def test_protocol_json_and_reader(real_built: Path, real_data: Path) -> None:
    protocol = json.loads((real_built / "protocol.json").read_text())
    header = pyedflib.EdfReader(str(real_data / "eegmmidb" / "S001" / "S001R04.edf"))
    assert tuple(header.getSignalLabels()) == RELEASE_CHANNELS
    header.close()
    names = protocol["ch_names"]
    assert len(names) == 64 and not any(n.endswith(".") for n in names)
    assert names[:4] == ["FC5", "FC3", "FC1", "FCz"] and names[-3:] == ["Oz", "O2", "Iz"]
    assert names[8] == "C3" and names[12] == "C4" and names[10] == "Cz" and names[3] == "FCz"
    assert protocol["dataset"] == "physionet-mi" and protocol["signal_key"] == "eeg"
    assert protocol["class_names"] == ["left_fist", "right_fist", "both_fists", "both_feet"]
    assert protocol["sfreq"] == 200.0 and protocol["n_times"] == 800 and protocol["scale"] == 0.01
    assert protocol["runs"] == list(IMAGERY_RUNS) and protocol["l_freq"] == 0.3 and protocol["notch"] == 60.0
    assert protocol["train"] == [1, 70] and protocol["val"] == [71, 89] and protocol["test"] == [90, 109]

    ds = WindowsDataset(real_built, "train")
    assert len(ds) == 90 and ds.n_classes == 4 and ds.ch_names == names
    item = ds[5]
    shard = np.load(real_built / "shards" / "S001.eeg.npy", mmap_mode="r")
    np.testing.assert_allclose(item["eeg"].numpy(), shard[5] * 0.01, rtol=1e-6)
    assert len(WindowsDataset(real_built, "test")) == 0


def test_find_subjects_ignores_non_subject_entries(synthetic_root: Path) -> None:
    (synthetic_root / "S1").mkdir(exist_ok=True)
    assert find_subjects(synthetic_root) == [1, 2]


def test_root_without_subjects(tmp_path: Path) -> None:
    (tmp_path / "RECORDS").write_text("S001/S001R01.edf\n")
    (tmp_path / "wfdbcal").write_text("")
    with pytest.raises(DataError, match="no subject folders") as err:
        preprocess_physionet_mi(tmp_path, tmp_path / "out", progress=False)
    assert str(tmp_path) in str(err.value)
    nested = tmp_path / "files" / "eegmmidb" / "1.0.0" / "S001"
    nested.mkdir(parents=True)
    with pytest.raises(DataError, match=r"did you mean .*1\.0\.0"):
        find_subjects(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        find_subjects(tmp_path / "nowhere")


@pytest.mark.parametrize("number", [0, 110])
def test_subject_out_of_range(synthetic_root: Path, tmp_path: Path, number: int) -> None:
    with pytest.raises(DataError, match=rf"1–109; got \[{number}\]"):
        preprocess_physionet_mi(synthetic_root, tmp_path, subjects=[1, number], progress=False)
    assert not (tmp_path / "manifest.csv").exists()


def test_missing_run_names_expected_path(real_data: Path, tmp_path: Path) -> None:
    link_subject(tmp_path / "raw", 3, real_data, runs=(4, 6, 8, 12, 14))
    with pytest.raises(DataError, match="missing run file") as err:
        preprocess_physionet_mi(tmp_path / "raw", tmp_path / "out", progress=False)
    assert str(tmp_path / "raw" / "S003" / "S003R10.edf") in str(err.value)


def test_real_damaged_edf_is_refused(real_data: Path, tmp_path: Path) -> None:
    raw_root = tmp_path / "raw"
    link_subject(raw_root, 2, real_data, runs=(6, 8, 10, 12, 14))
    bad = run_path(raw_root, 2, 4)
    shutil.copy(real_data / "bad" / "S001R01_corrupt_annotations.edf", bad)
    with pytest.raises(DataError) as err:
        preprocess_physionet_mi(raw_root, tmp_path / "out", progress=False)
    message = str(err.value)
    assert str(bad) in message and "damaged EDF+ file" in message and "annotation" in message
    assert "--skip-bad" in message


def test_run_without_cues_is_refused(real_data: Path, tmp_path: Path) -> None:
    raw_root = tmp_path / "raw"
    link_subject(raw_root, 5, real_data, runs=(4, 6, 8, 10, 12))
    raw = mne.io.read_raw_edf(real_data / "eegmmidb" / "S001" / "S001R14.edf", preload=True, verbose="error")
    raw.set_annotations(raw.annotations[raw.annotations.description == "T0"])
    no_cues = run_path(raw_root, 5, 14)
    mne.export.export_raw(no_cues, raw, fmt="edf", verbose="error")
    with pytest.raises(DataError, match=r"no T1 or T2 annotations \(found \['T0'\]\)") as err:
        preprocess_physionet_mi(raw_root, tmp_path / "out", progress=False)
    assert str(no_cues) in str(err.value)


def test_skip_bad_counts_and_names(real_data: Path, tmp_path: Path) -> None:
    raw_root = tmp_path / "raw"
    link_subject(raw_root, 1, real_data)
    link_subject(raw_root, 2, real_data, runs=(6, 8, 10, 12, 14))
    shutil.copy(real_data / "bad" / "S001R01_corrupt_annotations.edf", run_path(raw_root, 2, 4))
    link_subject(raw_root, 3, real_data, runs=(4, 6))
    report = preprocess_physionet_mi(raw_root, tmp_path / "out", skip_bad=True, progress=False)
    assert report.processed == ["S001"] and sorted(report.skipped) == ["S002", "S003"]
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["n_skipped"] == 2
    assert str(run_path(raw_root, 2, 4)) in saved["skipped"]["S002"]
    assert str(run_path(raw_root, 3, 8)) in saved["skipped"]["S003"]
    assert "whole" in saved["skipped"]["S002"] and "whole" in saved["skipped"]["S003"]
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype={"subject": str})
    assert set(manifest["subject"]) == {"S001"} and len(manifest) == 90


def test_reuse_rebuild_and_nothing_lost(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = preprocess_physionet_mi(synthetic_root, out, progress=False)
    assert first.processed == ["S001", "S002"] and first.reused == []
    n = len(pd.read_csv(out / "manifest.csv"))
    assert n == 2 * 6 * 3 == first.n_windows
    again = preprocess_physionet_mi(synthetic_root, out, progress=False)
    assert again.reused == ["S001", "S002"] and again.processed == []

    changed = preprocess_physionet_mi(synthetic_root, out, protocol=PhysionetMIProtocol(notch=50.0), progress=False)
    assert changed.processed == ["S001", "S002"] and changed.reused == []
    assert json.loads((out / "protocol.json").read_text())["notch"] == 50.0

    before = {p.name: p.read_bytes() for p in [out / "manifest.csv", out / "protocol.json", *out.glob("shards/*")]}
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_root, broken, symlinks=True)
    run_path(broken, 3, 4).parent.mkdir()
    shutil.copy(run_path(synthetic_root, 1, 4), run_path(broken, 3, 4))  # S003 lacks its other runs
    with pytest.raises(DataError, match=r"S003R06\.edf"):
        preprocess_physionet_mi(broken, out, protocol=PhysionetMIProtocol(notch=50.0), progress=False)
    after = {p.name: p.read_bytes() for p in [out / "manifest.csv", out / "protocol.json", *out.glob("shards/*")]}
    assert after == before


def test_parallel_build_matches_serial(synthetic_root: Path, tmp_path: Path) -> None:
    serial = preprocess_physionet_mi(synthetic_root, tmp_path / "one", progress=False)
    parallel = preprocess_physionet_mi(synthetic_root, tmp_path / "two", jobs=2, progress=False)
    assert serial.processed == parallel.processed == ["S001", "S002"]
    a = pd.read_csv(tmp_path / "one" / "manifest.csv")
    b = pd.read_csv(tmp_path / "two" / "manifest.csv")
    pd.testing.assert_frame_equal(a, b)
    for s in ("S001", "S002"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "one" / "shards" / f"{s}.eeg.npy"), np.load(tmp_path / "two" / "shards" / f"{s}.eeg.npy")
        )


def test_128hz_subject_is_resampled_and_noted(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    write_synthetic_eegmmidb(root, subjects=(88,), n_trials_per_run=3, sfreq=128.0, seed=1)
    write_synthetic_eegmmidb(root, subjects=(87,), n_trials_per_run=3, seed=1)
    assert mne.io.read_raw_edf(run_path(root, 88, 4), verbose="error").info["sfreq"] == 128.0
    report = preprocess_physionet_mi(root, tmp_path / "out", progress=False)
    assert report.notes == {"S088": {"original_sfreq": 128.0}}
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["resampled_from"] == {"S088": 128.0}
    x = np.load(tmp_path / "out" / "shards" / "S088.eeg.npy")
    assert x.shape == (18, 64, 800)
    assert set(pd.read_csv(tmp_path / "out" / "manifest.csv")["split"]) == {"val"}


def test_windows_past_the_end_are_counted(synthetic_root: Path, tmp_path: Path) -> None:
    protocol = PhysionetMIProtocol(window_seconds=6.0)  # 6 s: the last cue of each run has less than that left
    expected_late, expected_kept = 0, 0
    for run in IMAGERY_RUNS:
        raw = mne.io.read_raw_edf(run_path(synthetic_root, 1, run), verbose="error")
        duration = raw.n_times / raw.info["sfreq"]
        for onset, text in zip(raw.annotations.onset, raw.annotations.description, strict=True):
            if text != "T0":
                late = onset + 6.0 > duration
                expected_late += late
                expected_kept += not late
    assert expected_late > 0
    report = preprocess_physionet_mi(synthetic_root, tmp_path, subjects=[1], protocol=protocol, progress=False)
    assert len(report.notes["S001"]["windows_past_end"]) == expected_late
    assert report.n_windows == expected_kept
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["n_windows_past_end"] == expected_late == saved["windows_past_end"]["S001"]


def test_protocol_validation() -> None:
    with pytest.raises(ConfigError, match="no label mapping"):
        PhysionetMIProtocol(runs=(4, 5))
    with pytest.raises(ConfigError, match="overlap"):
        PhysionetMIProtocol(val=(60, 89))
    with pytest.raises(ConfigError, match="not EEGMMIDB channels"):
        PhysionetMIProtocol(channels=("C3", "C3.."))
    with pytest.raises(ConfigError, match="whole number of samples"):
        PhysionetMIProtocol(sfreq=250, window_seconds=3.001)
    rest = PhysionetMIProtocol(keep_rest=True)
    assert rest.class_names[-1] == "rest" and rest.labels_of_run(6) == {"T1": 2, "T2": 3, "T0": 4}


@pytest.mark.parametrize("sfreq", [128.0, 160.0, 200.0, 250.0])
def test_window_length_is_a_duration(sfreq: float) -> None:
    """Changing the rate keeps 4-s windows: n_times follows sfreq, in the object and in protocol.json."""
    protocol = load_config(PhysionetMIProtocol, None, [f"sfreq={sfreq:g}"])
    assert protocol.window_seconds == 4.0 and protocol.n_times == round(4 * sfreq)
    saved = protocol.to_protocol()
    assert saved["n_times"] / saved["sfreq"] == saved["window_seconds"] == 4.0
    with pytest.raises(ConfigError, match="window_seconds"):  # the old sample count is not a setting any more
        load_config(PhysionetMIProtocol, None, ["n_times=1000"])


# --- command line -----------------------------------------------------------------------------------------


def _cli_main():
    """``biokd.cli.main`` when every command module exists; otherwise the same wiring around this command."""
    try:
        from biokd.cli import main

        return main
    except ImportError:
        from biokd.eeg.cmd_physionet_mi import preprocess

        app = typer.Typer(pretty_exceptions_enable=False)
        sub = typer.Typer()
        app.add_typer(sub, name="preprocess")
        sub.command("physionet-mi")(preprocess)
        sub.command("other")(lambda: None)

        def main() -> None:
            try:
                app()
            except BiokdError as err:
                print(f"error: {err}", file=sys.stderr)
                sys.exit(2)

        return main


def _run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["biokd", "preprocess", "physionet-mi", *args])
    with pytest.raises(SystemExit) as exit_:
        _cli_main()()
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


def test_cli_bad_input_exits_2(real_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    raw_root = tmp_path / "raw"
    link_subject(raw_root, 2, real_data, runs=(6, 8, 10, 12, 14))
    shutil.copy(real_data / "bad" / "S001R01_corrupt_annotations.edf", run_path(raw_root, 2, 4))
    code, _, err = _run(monkeypatch, capsys, "--root", str(raw_root), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "error" in err and str(run_path(raw_root, 2, 4)) in err and "damaged" in err
    code, _, err = _run(monkeypatch, capsys, "--root", str(raw_root), "--out", str(tmp_path / "o"), "--subjects", "x")
    assert code == 2 and "'x' is not a number" in err
    code, _, err = _run(monkeypatch, capsys, "--root", str(raw_root), "--out", str(tmp_path / "o"), "--set", "nothc=1")
    assert code == 2 and "Did you mean 'notch'" in err


def test_cli_summary_and_overrides(synthetic_root: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    args = ["--root", str(synthetic_root), "--out", str(out), "--subjects", "1-2", "--set", "sfreq=160"]
    code, stdout, _ = _run(monkeypatch, capsys, *args)
    assert code == 0
    assert json.loads((out / "protocol.json").read_text())["sfreq"] == 160.0
    assert np.load(out / "shards" / "S001.eeg.npy", mmap_mode="r").shape[1:] == (64, 640)  # 4 s follow the rate
    assert "2 processed, 0 reused, 0 skipped" in stdout and "report.json" in stdout
    assert "left_fist" in stdout and "both_feet" in stdout
    code, stdout, _ = _run(monkeypatch, capsys, *args)
    assert code == 0 and "0 processed, 2 reused" in stdout


def test_truncated_edf_is_refused_or_skipped_and_counted(synthetic_root: Path, tmp_path: Path) -> None:
    raw_root = tmp_path / "raw"
    shutil.copytree(synthetic_root, raw_root)
    cut = run_path(raw_root, 2, 8)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # a download cut in half: the header still promises every record
    with pytest.raises(DataError, match=r"S002R08\.edf: truncated EDF file: the header promises \d+ data records"):
        preprocess_physionet_mi(raw_root, tmp_path / "out", progress=False)
    report = preprocess_physionet_mi(raw_root, tmp_path / "out2", skip_bad=True, progress=False)
    assert report.processed == ["S001"] and list(report.skipped) == ["S002"]
    assert "truncated" in report.skipped["S002"] and str(cut) in report.skipped["S002"]


def test_a_cue_beyond_the_end_of_the_recording_is_counted(tmp_path: Path) -> None:
    """An untruncated EDF+ whose annotations hold a cue after its last sample: MNE drops the cue on reading;
    the build counts it (per subject, under ``cues_beyond_recording``) instead of losing it silently."""
    from biokd.eeg.synthetic import _write_edf

    root = tmp_path / "raw"
    write_synthetic_eegmmidb(root, subjects=(1,), n_trials_per_run=3, seed=1)
    before = preprocess_physionet_mi(root, tmp_path / "ref", progress=False, subjects=[1]).n_windows
    path = run_path(root, 1, 4)
    raw = mne.io.read_raw_edf(path, verbose="error")
    duration = raw.n_times / raw.info["sfreq"]
    cues = [(float(o), float(d), str(t)) for o, d, t in zip(*(raw.annotations.__getattribute__(k) for k in
            ("onset", "duration", "description")), strict=True)]  # fmt: skip
    _write_edf(path, raw.get_data(units="uV"), int(raw.info["sfreq"]), [*cues, (duration + 3.0, 4.1, "T2")])
    assert len(mne.io.read_raw_edf(path, verbose="error").annotations) == len(cues)  # MNE drops the late cue
    assert len(mne.read_annotations(path)) == len(cues) + 1  # the file holds it
    report = preprocess_physionet_mi(root, tmp_path / "out", progress=False, subjects=[1])
    beyond = [w for w in report.notes["S001"]["windows_past_end"] if w["where"] == "beyond the recording"]
    assert beyond == [{"run": 4, "onset_s": round(duration + 3.0, 4), "event": "T2", "where": "beyond the recording"}]
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["n_cues_beyond_recording"] == 1 and saved["cues_beyond_recording"] == {"S001": 1}
    assert saved["n_windows_past_end"] >= 1 and report.n_windows == before
