"""Preprocessing on a Dask cluster (two local worker processes): the same bytes as the local build, a worker
that dies is retried, a subject that fails is named in the report."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from biokd.data.spec import DataSpec, InputSpec, TargetSpec
from biokd.data.store import SubjectItems, build_store
from biokd.errors import DataError

distributed = pytest.importorskip("distributed")

SPEC = DataSpec(
    "toy",
    [InputSpec("x", [3, 5], ["channel", "time"])],
    TargetSpec("classification", classes=["a", "b"]),
    ["subject"],
)


def toy_subject(subject: str, paths: Sequence[Path], protocol: Mapping[str, Any]) -> SubjectItems:
    """Items from the numbers in the subject's file; "bad" is a damaged file; "die" kills the worker once."""
    text = paths[0].read_text()
    if text == "bad":
        raise DataError(paths[0], "damaged")
    if text == "die":
        marker = paths[0].with_suffix(".died")
        if not marker.exists():
            marker.write_text("once")
            os._exit(1)  # the worker process dies mid-task
        text = "7"
    rng = np.random.default_rng(int(text))
    n = 3 + int(text) % 3
    rows = [{"subject": subject, "label": i % 2, "split": "train" if int(text) % 2 else "test"} for i in range(n)]
    return SubjectItems({"x": rng.normal(size=(n, 3, 5)).astype(np.float32)}, rows, notes={"n": n})


def _sources(folder: Path) -> dict[str, list[Path]]:
    folder.mkdir(parents=True)
    values = {"s1": "1", "s2": "2", "s3": "bad", "s4": "4", "s5": "die", "s6": "6"}
    for s, v in values.items():
        (folder / f"{s}.txt").write_text(v)
        os.utime(folder / f"{s}.txt", (1_700_000_000, 1_700_000_000))  # sidecars record sources' mtimes
    return {s: [folder / f"{s}.txt"] for s in values}


def _files(out: Path) -> dict[str, bytes]:
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in (out / "shards").iterdir()}
    return {**files, "manifest.csv": (out / "manifest.csv").read_bytes()}


def test_dask_cluster_build_is_byte_identical_to_the_local_one(tmp_path: Path) -> None:
    import cloudpickle
    from distributed import LocalCluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import a test module
    local_sources = _sources(tmp_path / "a")
    (tmp_path / "a" / "s5.died").write_text("not here: this process must live")
    local = build_store(tmp_path / "local", local_sources, toy_subject, {"v": 1}, SPEC, skip_bad=True)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        remote = build_store(
            tmp_path / "dask",
            _sources(tmp_path / "b"),
            toy_subject,
            {"v": 1},
            SPEC,
            skip_bad=True,
            progress=False,
            scheduler=cluster.scheduler_address,
        )
        assert (tmp_path / "b" / "s5.died").exists()  # a worker died on s5 ...
        assert "s5" in remote.processed  # ... and the subject was run again elsewhere
        assert sorted(remote.processed) == sorted(local.processed) == ["s1", "s2", "s4", "s5", "s6"]
        assert list(remote.skipped) == list(local.skipped) == ["s3"]
        assert "damaged" in remote.skipped["s3"]
        with pytest.raises(DataError, match="s3"):
            build_store(tmp_path / "dask2", _sources(tmp_path / "c"), toy_subject, {"v": 1}, SPEC,
                        scheduler=cluster.scheduler_address)  # fmt: skip
    local_files, remote_files = _files(tmp_path / "local"), _files(tmp_path / "dask")
    assert sorted(local_files) == sorted(remote_files)
    assert len([f for f in local_files if f.endswith(".x.npy")]) == 5
    for name, content in local_files.items():
        assert remote_files[name] == content, name
