"""The shared store and reader: several named arrays per item, verified shards, one writer at a time."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from biokd.data.reader import ShardDataset
from biokd.data.spec import DataSpec, InputSpec, TargetSpec
from biokd.data.store import SubjectItems, build_store, folder_lock
from biokd.errors import ConfigError, DataError

SPEC = DataSpec(
    "toy",
    [
        InputSpec("mri", [1, 4, 4, 4], ["channel", "x", "y", "z"]),
        InputSpec("pet", [1, 4, 4, 4], ["channel", "x", "y", "z"]),
    ],
    TargetSpec("binary", classes=["negative", "positive"]),
    ["subject", "site"],
)


def toy_subject(subject: str, paths: Sequence[Path], protocol: Mapping[str, Any]) -> SubjectItems:
    """Two visits per subject; a subject whose file says "bad" is damaged."""
    text = paths[0].read_text()
    if "bad" in text:
        raise DataError(paths[0], "damaged")
    k = int(text) * protocol["gain"]
    arrays = {"mri": np.full((2, 1, 4, 4, 4), k, np.float32), "pet": np.full((2, 1, 4, 4, 4), -k, np.float32)}
    rows = [{"subject": subject, "site": f"site{int(text) % 2}", "label": v, "split": "train"} for v in (0, 1)]
    return SubjectItems(arrays, rows, notes={"visits": 2})


def sources(tmp_path: Path, values: dict[str, str]) -> dict[str, list[Path]]:
    out = {}
    for s, v in values.items():
        (tmp_path / "src").mkdir(exist_ok=True)
        (tmp_path / "src" / f"{s}.txt").write_text(v)
        out[s] = [tmp_path / "src" / f"{s}.txt"]
    return out


def test_several_arrays_per_item_and_metadata(tmp_path: Path) -> None:
    out = tmp_path / "store"
    report = build_store(out, sources(tmp_path, {"s1": "1", "s2": "2"}), toy_subject, {"gain": 3}, SPEC)
    assert report.processed == ["s1", "s2"] and report.n_items == 4
    ds = ShardDataset(out, "train")
    item = ds[3]
    assert item["mri"].shape == (1, 4, 4, 4) and float(item["mri"][0, 0, 0, 0]) == 6.0
    assert float(item["pet"].max()) == -6.0 and item["label"] == 1 and item["site"] == "site0"
    assert ds.spec == SPEC and json.loads((out / "protocol.json").read_text())["spec"]["dataset"] == "toy"
    again = build_store(out, sources(tmp_path, {"s1": "1", "s2": "2"}), toy_subject, {"gain": 3}, SPEC)
    assert again.reused == ["s1", "s2"] and again.processed == []


def test_a_shard_of_another_protocol_is_never_read(tmp_path: Path) -> None:
    out = tmp_path / "store"
    src = sources(tmp_path, {"s1": "1", "s2": "2"})
    build_store(out, src, toy_subject, {"gain": 3}, SPEC)
    side = json.loads((out / "shards" / "s1.json").read_text())
    (out / "shards" / "s1.json").write_text(json.dumps({**side, "protocol_hash": "0" * 64}))  # an interrupted rebuild
    with pytest.raises(DataError, match="another protocol"):
        ShardDataset(out)
    build_store(out, src, toy_subject, {"gain": 3}, SPEC)  # the build repairs it
    assert len(ShardDataset(out)) == 4


def test_protocol_change_retires_the_old_folder_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "store"
    src = sources(tmp_path, {"s1": "1", "s2": "2"})
    build_store(out, src, toy_subject, {"gain": 3}, SPEC)
    calls = []

    def dying(subject, paths, protocol):
        calls.append(subject)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed mid-rebuild
        return toy_subject(subject, paths, protocol)

    with pytest.raises(KeyboardInterrupt):
        build_store(out, src, dying, {"gain": 5}, SPEC)
    with pytest.raises(DataError, match="not a preprocessed folder"):
        ShardDataset(out)  # no readable mix of gain 3 and gain 5


def test_second_writer_is_refused_and_a_stale_lock_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "store"
    out.mkdir()
    with folder_lock(out), pytest.raises(DataError, match="already writing"):
        build_store(out, sources(tmp_path, {"s1": "1"}), toy_subject, {"gain": 1}, SPEC)
    (out / ".lock").write_text("nohost-but-ours 999999999")
    import socket

    (out / ".lock").write_text(f"{socket.gethostname()} 999999999")  # a dead process's lock
    assert build_store(out, sources(tmp_path, {"s1": "1"}), toy_subject, {"gain": 1}, SPEC).processed == ["s1"]
    assert not (out / ".lock").exists()


def test_all_subjects_skipped_is_an_error_naming_them(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no subject could be preprocessed \(1 skipped: s1: .*damaged"):
        build_store(tmp_path / "o", sources(tmp_path, {"s1": "bad"}), toy_subject, {"gain": 1}, SPEC, skip_bad=True)


def test_out_that_is_a_file_or_holds_another_dataset(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        build_store(tmp_path / "file" / "sub", sources(tmp_path, {"s1": "1"}), toy_subject, {"gain": 1}, SPEC)
    out = tmp_path / "store"
    build_store(out, sources(tmp_path, {"s1": "1"}), toy_subject, {"gain": 1}, SPEC)
    other = DataSpec("other", SPEC.inputs, SPEC.target, SPEC.metadata)
    with pytest.raises(DataError, match="holds a preprocessed 'toy' dataset"):
        build_store(out, sources(tmp_path, {"s1": "1"}), toy_subject, {"gain": 1}, other)


def test_manifest_shard_paths_stay_in_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "store"
    build_store(out, sources(tmp_path, {"s1": "1"}), toy_subject, {"gain": 1}, SPEC)
    manifest = (out / "manifest.csv").read_text().replace("shards/s1", "shards/../../etc")
    (out / "manifest.csv").write_text(manifest)
    with pytest.raises(DataError, match="outside the shards/ folder"):
        ShardDataset(out)
    (out / "manifest.csv").write_text(manifest.replace("shards/../../etc", "shards/s1").replace(",1\n", ",7\n"))
    with pytest.raises(DataError, match="rows of shards/s1 fall outside its 2 items"):
        ShardDataset(out)


def test_spec_is_checked() -> None:
    with pytest.raises(ConfigError, match="shape"):
        InputSpec("fc", [3, 3], ["roi"])
    with pytest.raises(ConfigError, match="positive class must be label 1"):
        TargetSpec("binary", classes=["a", "b"], positive="a")
    assert TargetSpec("forecasting", key="target", horizons=[30, 60]).n_outputs == 2


def test_group_stage_is_fitted_on_training_subjects_only(tmp_path: Path) -> None:
    from biokd.data.stages import StageConfig, fit_stages, stage_records

    out = tmp_path / "store"
    src = sources(tmp_path, {"s1": "1", "s2": "2", "s3": "9"})

    def split_by_subject(subject, paths, protocol):
        items = toy_subject(subject, paths, protocol)
        for row in items.rows:
            row["split"] = "test" if subject == "s3" else "train"
        return items

    build_store(out, src, split_by_subject, {"gain": 1}, SPEC)
    (stage,) = fit_stages(out, [StageConfig("standardize", {"key": "mri"})], "train")
    assert float(stage.state["mean"].mean()) == pytest.approx(1.5)  # s1 and s2 only: the test subject's 9 is unseen
    test_item = ShardDataset(out, "test", [stage])[0]
    assert float(test_item["mri"].mean()) == pytest.approx((9 - 1.5) / 0.5)
    (record,) = stage_records(out)
    assert record["fitted_on"] == ["s1", "s2"] and record["kind"] == "standardize"
    (again,) = fit_stages(out, [StageConfig("standardize", {"key": "mri"})], "train")
    assert len(list((out / "stages").glob("*.npz"))) == 1 and np.array_equal(again.state["std"], stage.state["std"])
