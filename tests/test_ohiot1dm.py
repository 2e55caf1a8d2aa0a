"""OhioT1DM loader, grid and windows on an XML fixture written here with known gaps, suspensions,
square and dual boluses, duplicates and bad values."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from biokd.data.reader import ShardDataset
from biokd.errors import DataError
from biokd.glucose.gluconet import GlucoNet
from biokd.glucose.ohiot1dm import (
    CHANNELS,
    OhioProtocol,
    build_grid,
    carbs_on_board_curve,
    find_patients,
    insulin_on_board_curve,
    make_windows,
    preprocess_ohiot1dm,
    read_patient_xml,
)

T0 = datetime(2022, 1, 1)
TRAIN_GAP = set(range(24, 36)) | {48, 49}  # slots without a reading in the training file
TEST_GAP = {114, 115, 116}  # 09:30-09:40 in the testing file


def ts(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%d-%m-%Y %H:%M:%S")


def xml_training(extra_cgm: str = "", extra_bolus: str = "", extra_meal: str = "") -> str:
    # Readings 30 s into each 5-minute slot: value 100 + slot, slots 0..95 (00:00-07:55).
    cgm = [f'<event ts="{ts(5 * k + 0.5)}" value="{100 + k}"/>' for k in range(96) if k not in TRAIN_GAP]
    cgm.insert(2, f'<event ts="{ts(5 * 1 + 0.5)}" value="101"/>')  # exact duplicate of slot 1
    cgm += [f'<event ts="{ts(130.5)}" value=""/>', f'<event ts="{ts(135.5)}" value="High"/>']  # in the gap
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<patient id="540" weight="99" insulin_type="Humalog">
  <glucose_level>
    {"".join(cgm)}{extra_cgm}
  </glucose_level>
  <finger_stick><event ts="{ts(60)}" value="130"/></finger_stick>
  <basal>
    <event ts="{ts(0)}" value="1.2"/>
    <event ts="{ts(360)}" value="0.6"/>
  </basal>
  <temp_basal>
    <event ts_begin="{ts(60)}" ts_end="{ts(90)}" value="0.0"/>
    <event ts_begin="{ts(300)}" ts_end="{ts(320)}" value="2.4"/>
    <event ts_begin="{ts(310)}" ts_end="{ts(340)}" value="0.0"/>
  </temp_basal>
  <bolus>
    <event ts_begin="{ts(30)}" ts_end="{ts(30)}" type="normal" dose="3.0" bwz_carb_input="45"/>
    <event ts_begin="{ts(100)}" ts_end="{ts(130)}" type="square" dose="3.0" bwz_carb_input=""/>
    <event ts_begin="{ts(180)}" ts_end="{ts(180)}" type="normal dual" dose="2.0" bwz_carb_input="30"/>
    <event ts_begin="{ts(180)}" ts_end="{ts(240)}" type="square dual" dose="1.2" bwz_carb_input="30"/>
    <event ts_begin="{ts(360)}" ts_end="{ts(380)}" type="normal dual" dose="4.0" bwz_carb_input="0"/>
    {extra_bolus}
  </bolus>
  <meal>
    <event ts="{ts(30)}" type="Breakfast" carbs="45"/>
    <event ts="{ts(30)}" type="Breakfast" carbs="45"/>
    {extra_meal}
  </meal>
  <sleep><event ts_begin="{ts(400)}" ts_end="{ts(380)}" quality="2"/></sleep>
  <hypo_event><event ts="{ts(200)}"><symptom name="sweating"/><symptom name="shaky"/></event></hypo_event>
  <exercise><event ts="{ts(250)}" intensity="5" type="walk" duration="" competitive=""/></exercise>
  <basis_sleep><event tbegin="{ts(0)}" tend="{ts(60)}" quality="80" type="sleep"/></basis_sleep>
  <acceleration><event ts="{ts(1)}" value="1.02"/></acceleration>
</patient>
"""


def xml_testing() -> str:
    # Readings in slots 96..143 (08:00-11:55): value 200 + (slot - 96); none in 09:30-09:40.
    cgm = "".join(
        f'<event ts="{ts(5 * k + 0.5)}" value="{200 + k - 96}"/>' for k in range(96, 144) if k not in TEST_GAP
    )
    return f"""<patient id="540" weight="99" insulin_type="Humalog">
  <glucose_level>{cgm}</glucose_level>
  <basal><event ts="{ts(480)}" value="0.6"/></basal>
  <temp_basal/><bolus/><meal/>
</patient>
"""


@pytest.fixture()
def release(tmp_path: Path) -> Path:
    root = tmp_path / "OhioT1DM"
    (root / "2020" / "train").mkdir(parents=True)
    (root / "2020" / "test").mkdir(parents=True)
    (root / "2020" / "train" / "540-ws-training.xml").write_text(xml_training())
    (root / "2020" / "test" / "540-ws-testing.xml").write_text(xml_testing())
    return root


def records(root: Path):
    files = find_patients(root)["540"]
    return [read_patient_xml(p) for p in files.paths]


def test_reads_every_stream_with_counts(release: Path) -> None:
    rec = read_patient_xml(release / "2020" / "train" / "540-ws-training.xml")
    assert rec.meta["release"] == "2020" and rec.meta["weight"] == "99" and rec.part == "training"
    glucose = rec.tables["glucose_level"]
    assert len(glucose) == 96 - len(TRAIN_GAP)
    assert glucose["value"].dtype == float and str(glucose["ts"].dtype).startswith("datetime64")
    assert rec.issues["glucose_level"] == {
        "dropped: exact duplicate": 1,
        "skipped: empty value": 1,
        "skipped: non-numeric value": 1,
    }
    assert rec.issues["meal"] == {"dropped: exact duplicate": 1}
    assert rec.issues["sleep"] == {"swapped: ts_end before ts_begin": 1}
    assert rec.tables["sleep"]["ts_begin"].iloc[0] == pd.Timestamp(T0 + timedelta(minutes=380))
    assert rec.issues["bolus"] == {"blank bwz_carb_input (kept as NaN)": 1}
    assert len(rec.tables["bolus"]) == 5 and np.isnan(rec.tables["bolus"]["bwz_carb_input"].iloc[1])
    assert rec.tables["hypo_event"]["symptom"].iloc[0] == "sweating; shaky"
    assert np.isnan(rec.tables["exercise"]["duration"].iloc[0])
    assert rec.tables["basis_sleep"]["tend"].iloc[0] == pd.Timestamp(T0 + timedelta(minutes=60))
    assert rec.tables["acceleration"]["value"].iloc[0] == pytest.approx(1.02)
    assert rec.n_skipped == 2


def test_grid_insulin_carbs_and_cgm_exact(release: Path) -> None:
    grid = build_grid(records(release))
    f = grid.frame
    assert f.index[0] == pd.Timestamp(T0) and len(f) == 144
    assert grid.test_start == pd.Timestamp(T0 + timedelta(hours=8))
    basal = f["basal"].to_numpy()
    np.testing.assert_allclose(basal[:12], 0.1)  # 1.2 U/h
    np.testing.assert_allclose(basal[12:18], 0.0)  # suspended 01:00-01:30
    assert basal[18] == pytest.approx(0.1)
    np.testing.assert_allclose(basal[60:62], 0.2)  # temp 2.4 U/h, cut at 05:10 by the next temp basal
    np.testing.assert_allclose(basal[62:68], 0.0)  # 05:10-05:40 suspended
    np.testing.assert_allclose(basal[68:72], 0.1)
    np.testing.assert_allclose(basal[72:96], 0.05)  # 0.6 U/h from 06:00
    bolus = f["bolus"].to_numpy()
    expected = np.zeros(144)
    expected[6] = 3.0  # normal
    expected[20:26] = 0.5  # square 3 U over 30 min
    expected[36] += 2.0  # normal dual part
    expected[36:48] += 0.1  # square dual part 1.2 U over 60 min
    expected[72] += 2.0  # a whole dual wave in one event: half now ...
    expected[72:76] += 0.5  # ... half over 20 min
    np.testing.assert_allclose(bolus, expected, atol=1e-12)
    np.testing.assert_allclose(f["insulin"], basal + bolus)
    assert f["carbs"].iloc[6] == 45 and f["carbs"].sum() == 45
    assert grid.notes["temp_basal_overlaps_truncated"] == 1
    assert grid.notes["temp_basal_suspensions"] == 2
    assert grid.notes["bolus"] == {"dual_split": 1}
    raw, cgm, mask = f["cgm_raw"].to_numpy(), f["cgm"].to_numpy(), f["cgm_mask"].to_numpy()
    assert raw[23] == 123 and np.isnan(raw[24:36]).all() and raw[36] == 136
    np.testing.assert_array_equal(cgm[24:30], 123.0)  # forward-filled for 30 min
    np.testing.assert_allclose(cgm[30:36], np.mean(np.arange(100, 124)))  # then the running mean of the past
    np.testing.assert_array_equal(cgm[48:50], 147.0)
    assert mask[24:36].sum() == 0 and mask[48:50].sum() == 0 and mask[:24].all()
    assert grid.notes["cgm_slots_forward_filled"] == 6 + 2 + 3 and grid.notes["cgm_slots_running_mean"] == 6
    assert f["part"].iloc[95] == "training" and f["part"].iloc[96] == "testing"
    assert raw[96] == 200 and raw[143] == 247 and np.isnan(raw[114:117]).all()


def test_iob_and_cob_curves_and_convolution(release: Path) -> None:
    # Hand-computed from the closed forms: exponential insulin model (td 360, tp 75) at 75 min,
    # Hovorka absorption (tmax 40) at 40 min = 2/e.
    assert insulin_on_board_curve(np.array([0.0]))[0] == pytest.approx(1.0)
    assert insulin_on_board_curve(np.array([75.0]))[0] == pytest.approx(0.69428, abs=2e-4)
    assert insulin_on_board_curve(np.array([360.0, 400.0])).tolist() == [0.0, 0.0]
    assert carbs_on_board_curve(np.array([40.0]))[0] == pytest.approx(2 / np.e)
    f = build_grid(records(release)).frame
    assert f["iob"].iloc[0] == pytest.approx(0.1)  # only the first slot's basal so far
    assert f["cob"].iloc[5] == 0 and f["cob"].iloc[6] == pytest.approx(45.0)
    assert f["cob"].iloc[14] == pytest.approx(45 * 2 / np.e)  # 40 min after the meal
    curve = insulin_on_board_curve(np.arange(0, 365, 5.0))
    assert f["iob"].iloc[10] == pytest.approx(float(np.dot(f["insulin"].iloc[10::-1], curve[:11])))


def test_windows_challenge_rules(release: Path) -> None:
    grid = build_grid(records(release))
    w = make_windows(grid, history=12, horizons=(6, 12), val_fraction=0.0)
    assert w.inputs.shape[1:] == (len(CHANNELS), 12) and w.inputs.dtype == np.float32
    train = w.split == "train"
    assert train.sum() == 51 and (w.split == "test").sum() == 42  # counted by hand in the comments
    assert np.isfinite(w.target[train]).all()
    raw = grid.frame["cgm_raw"].to_numpy()
    slot = ((pd.DatetimeIndex(w.origin) - pd.Timestamp(T0)) // pd.Timedelta(minutes=5)).to_numpy()
    for k, h in enumerate((6, 12)):
        scored = np.isfinite(w.target[:, k])
        np.testing.assert_array_equal(w.target[scored, k], raw[slot[scored] + h])  # real readings, never filled
        assert not (set(slot[scored] + h) & (TRAIN_GAP | TEST_GAP))
    test = w.split == "test"
    # Scoring starts 60 minutes into the test file: no scored target before 09:00 (slot 108).
    for k, h in enumerate((6, 12)):
        target_slot = slot[test] + h
        assert np.isnan(w.target[test, k][target_slot < 108]).all()
        assert np.isfinite(w.target[test, k][target_slot == 108]).all()
        assert np.isfinite(w.target[test, k]).sum() == 33
    assert w.notes["test_scored"] == {"30min": 33, "60min": 33}
    # The first test window's history reaches back into the training file.
    first = np.flatnonzero(test)[0]
    assert slot[first] == 96
    np.testing.assert_array_equal(w.inputs[first, 0], grid.frame["cgm"].to_numpy()[85:97].astype(np.float32))


def test_validation_is_the_end_of_the_training_file(release: Path) -> None:
    w = make_windows(build_grid(records(release)), history=12, val_fraction=0.25)
    assert (w.split == "train").sum() == 27 and (w.split == "val").sum() == 12
    origins = pd.DatetimeIndex(w.origin)
    assert origins[w.split == "train"].max() < origins[w.split == "val"].min()


def test_future_changes_do_not_change_inputs(release: Path, tmp_path: Path) -> None:
    """Leakage: altering readings, boluses and meals after a window's origin leaves its inputs (and the
    GlucoNet decomposition of them) unchanged; altering the past changes them."""
    base = make_windows(build_grid(records(release)), history=36, val_fraction=0.0)
    origin = pd.Timestamp(T0 + timedelta(minutes=5 * 60))  # slot 60
    changed_root = tmp_path / "changed"
    changed_root.mkdir()
    # A future reading altered (slot 61), a future bolus and meal added (slot 62).
    text = xml_training(
        extra_bolus=f'<event ts_begin="{ts(311)}" ts_end="{ts(311)}" type="normal" dose="9.0" bwz_carb_input="0"/>',
        extra_meal=f'<event ts="{ts(312)}" type="Lunch" carbs="80"/>',
    ).replace(f'ts="{ts(305.5)}" value="161"', f'ts="{ts(305.5)}" value="300"')
    (changed_root / "540-ws-training.xml").write_text(text)
    (changed_root / "540-ws-testing.xml").write_text(xml_testing())
    changed = make_windows(build_grid(records(changed_root)), history=36, val_fraction=0.0)
    i = np.flatnonzero(pd.DatetimeIndex(base.origin) == origin)[0]
    j = np.flatnonzero(pd.DatetimeIndex(changed.origin) == origin)[0]
    np.testing.assert_array_equal(base.inputs[i], changed.inputs[j])
    net = GlucoNet()
    low_a, high_a = net.bands(torch.from_numpy(base.inputs[i : i + 1]))
    low_b, high_b = net.bands(torch.from_numpy(changed.inputs[j : j + 1]))
    assert torch.equal(low_a, low_b) and torch.equal(high_a, high_b)
    # The window one step later sees the altered reading: its inputs differ.
    later = pd.DatetimeIndex(changed.origin) == origin + pd.Timedelta(minutes=5)
    k = np.flatnonzero(pd.DatetimeIndex(base.origin) == origin + pd.Timedelta(minutes=5))[0]
    assert not np.array_equal(base.inputs[k], changed.inputs[np.flatnonzero(later)[0]])


def test_preprocess_writes_and_reuses(release: Path, tmp_path: Path) -> None:
    out = tmp_path / "pre"
    report = preprocess_ohiot1dm(release, out, OhioProtocol(history=12, val_fraction=0.0))
    assert report["processed"] == ["540"] and report["n_windows"] == 51 + 42
    assert report["events_skipped"] == 2
    assert report["patients"]["540"]["issues"]["training"]["glucose_level"]["skipped: empty value"] == 1
    manifest = pd.read_csv(out / "manifest.csv", dtype={"subject": str})
    assert {"subject", "release", "split"} <= set(manifest.columns) and manifest["release"].iloc[0] == 2020
    assert (out / "shards" / "540.grid.csv").is_file() and (out / "protocol.json").is_file()
    test = ShardDataset(out, "test")
    assert len(test) == 42 and test[0]["glucose_inputs"].shape == (6, 12)
    assert np.isfinite(test.targets()).sum() == 66
    assert sum(test[i]["target_mask"].sum().item() for i in range(len(test))) == 66
    assert preprocess_ohiot1dm(release, out, OhioProtocol(history=12, val_fraction=0.0))["reused"] == ["540"]
    assert preprocess_ohiot1dm(release, out, OhioProtocol(history=24, val_fraction=0.0))["processed"] == ["540"]


def write(root: Path, name: str, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)
    return root / name


def test_malformed_xml_names_file_and_line(tmp_path: Path) -> None:
    text = xml_training().replace("<finger_stick>", "<finger_stick", 1)
    path = write(tmp_path, "540-ws-training.xml", text)
    with pytest.raises(DataError, match=r"540-ws-training\.xml: malformed XML at line \d+"):
        read_patient_xml(path)


def test_timestamp_in_another_format(tmp_path: Path) -> None:
    text = xml_training().replace(
        f'<event ts="{ts(60)}" value="130"/>', '<event ts="2022-01-01 01:00:00" value="130"/>'
    )
    path = write(tmp_path, "540-ws-training.xml", text)
    with pytest.raises(DataError, match=r"line \d+: <finger_stick> event ts='2022-01-01 01:00:00' is not a timestamp"):
        read_patient_xml(path)


def test_file_without_glucose(tmp_path: Path) -> None:
    path = write(tmp_path, "540-ws-training.xml", '<patient id="540"><basal/></patient>')
    with pytest.raises(DataError, match="no glucose_level readings"):
        read_patient_xml(path)


def test_id_mismatch_and_bad_names(tmp_path: Path) -> None:
    path = write(tmp_path, "541-ws-training.xml", xml_training())
    with pytest.raises(DataError, match="disagrees with the file name"):
        read_patient_xml(path)
    with pytest.raises(DataError, match="not an OhioT1DM file"):
        read_patient_xml(write(tmp_path, "540.xml", xml_training()))


def test_test_file_without_training_file(tmp_path: Path) -> None:
    write(tmp_path / "OhioT1DM-2-testing", "552-ws-testing.xml", xml_testing().replace('"540"', '"552"'))
    with pytest.raises(DataError, match=r"552-ws-testing\.xml: test file of patient 552 has no matching"):
        find_patients(tmp_path)
    with pytest.raises(DataError, match=r"no \*-ws-training\.xml"):
        find_patients(write(tmp_path / "empty", "x.txt", "").parent)


def test_skip_bad_lists_the_patient(release: Path, tmp_path: Path) -> None:
    write(release / "2018" / "train", "559-ws-training.xml", '<patient id="559"><glucose_level></patient>')
    with pytest.raises(DataError, match=r"559-ws-training\.xml: malformed XML"):
        preprocess_ohiot1dm(release, tmp_path / "a", OhioProtocol(history=12))
    report = preprocess_ohiot1dm(release, tmp_path / "b", OhioProtocol(history=12), skip_bad=True)
    assert report["processed"] == ["540"] and list(report["skipped"]) == ["559"]
    assert report["n_skipped_patients"] == 1


def test_evaluation_scores_each_target_once_and_averages_the_2020_six(release: Path, tmp_path: Path) -> None:
    from biokd.glucose.demo import evaluate
    from biokd.glucose.gluconet import Persistence

    preprocess_ohiot1dm(release, tmp_path, OhioProtocol(history=12, val_fraction=0.0))
    result = evaluate({"persistence": Persistence()}, ShardDataset(tmp_path, "test"))["persistence"]
    m30 = result["per_patient"]["540"]["30min"]
    assert m30["n"] == 33 and result["mean_over_2020"]["30min"]["rmse"] == m30["rmse"]
    # Test readings rise 1 mg/dL per 5 min, so persistence misses by 6 at 30 min and 12 at 60 min, except
    # at origins inside the 09:30-09:40 gap, whose input holds the 09:25 reading: 7, 8 and 9 behind.
    assert m30["mae"] == pytest.approx((30 * 6 + 7 + 8 + 9) / 33)


# -- impossible values and timestamps (issue 14, items 6 and 7) ------------------------------------------------
def _release_with(tmp_path: Path, training: str, testing: str) -> Path:
    write(tmp_path / "r" / "train", "540-ws-training.xml", training)
    write(tmp_path / "r" / "test", "540-ws-testing.xml", testing)
    return tmp_path / "r"


def test_impossible_values_are_excluded_and_counted_per_stream(tmp_path: Path) -> None:
    # Four impossible readings inside the training gap (slots 30-33), a negative bolus and a negative meal.
    bad_cgm = "".join(f'<event ts="{ts(5 * k + 0.5)}" value="{v}"/>' for k, v in zip(range(30, 34), BAD, strict=True))
    text = xml_training(
        extra_cgm=bad_cgm,
        extra_bolus=f'<event ts_begin="{ts(50)}" ts_end="{ts(50)}" type="normal" dose="-300"/>',
        extra_meal=f'<event ts="{ts(55)}" type="Lunch" carbs="-1e9"/>',
    )
    root = _release_with(tmp_path, text, xml_testing())
    grid = build_grid(records(root))
    f = grid.frame
    assert np.isnan(f["cgm_raw"].to_numpy()[24:36]).all() and np.isfinite(f["cgm"]).all()
    assert f["carbs"].sum() == 45 and f["bolus"].to_numpy()[10] == 0.0
    assert grid.notes["out_of_range"] == {
        "training glucose_level": {"value outside [20, 600]": 4},
        "training bolus": {"dose outside [0, 75]": 1},
        "training meal": {"carbs outside [0, 500]": 1},
    }
    w = make_windows(grid, history=12, val_fraction=0.0)
    assert np.isfinite(w.inputs).all() and np.nanmax(w.target) <= 600 and np.nanmin(w.target) >= 20


BAD = ("1e999", "-inf", "-50", "100000")


def test_a_reading_a_century_later_is_a_time_outlier(tmp_path: Path) -> None:
    late = (T0 + timedelta(days=36500)).strftime("%d-%m-%Y %H:%M:%S")
    root = _release_with(tmp_path, xml_training(extra_cgm=f'<event ts="{late}" value="150"/>'), xml_testing())
    grid = build_grid(records(root))
    assert len(grid.frame) == 144  # as without the outlier
    assert grid.notes["time_outliers"]["training"]["excluded_events"] == {"glucose_level": 1}


def test_a_mistyped_date_in_the_testing_file_does_not_empty_training(tmp_path: Path) -> None:
    swapped = (T0 - timedelta(days=60)).strftime("%d-%m-%Y %H:%M:%S")  # e.g. a day/month swap
    testing = xml_testing().replace("<glucose_level>", f'<glucose_level><event ts="{swapped}" value="150"/>')
    root = _release_with(tmp_path, xml_training(), testing)
    w = make_windows(build_grid(records(root)), history=12, val_fraction=0.25)
    clean = make_windows(
        build_grid(records(_release_with(tmp_path / "c", xml_training(), xml_testing()))), 12, val_fraction=0.25
    )
    assert w.notes["windows"] == clean.notes["windows"] and w.notes["windows"]["train"] > 0


def test_a_testing_file_before_its_training_file_is_refused(tmp_path: Path) -> None:
    root = _release_with(tmp_path, xml_testing(), xml_training())  # the two files' contents swapped
    with pytest.raises(DataError, match=r"540-ws-testing\.xml: the testing file begins .* before its training file"):
        build_grid(records(root))


@pytest.mark.parametrize("horizons", [(-6, 0), (0,), ()])
def test_horizons_must_be_positive(release: Path, horizons) -> None:
    from biokd.errors import ConfigError

    with pytest.raises(ConfigError, match="horizons must be positive"):
        make_windows(build_grid(records(release)), history=12, horizons=horizons)
