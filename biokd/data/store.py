"""On-disk store of preprocessed windows: one memory-mappable ``.npy`` shard per subject plus a manifest.

Layout of an output folder::

    protocol.json          the protocol used (and its hash); a changed protocol never reuses old shards
    manifest.csv           one row per window: subject, session, run, label, label_name, onset_s, split, shard, row
    report.json            processed / reused / skipped subjects, with reasons
    shards/<subject>.npy   float32 array (n_windows, n_channels, n_times)
    shards/<subject>.csv   the manifest rows of that shard
    shards/<subject>.json  sidecar: protocol hash and source-file fingerprints the shard was built from

Subjects are processed in worker processes that write their own shard (atomically), so peak memory stays
that of one subject whatever the number of subjects.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._console import live_progress_ok
from .._io import sha256_json, write_json, write_npy, write_text
from ..errors import DataError

MANIFEST_COLUMNS = ["subject", "session", "run", "label", "label_name", "onset_s", "split"]


@dataclass
class SubjectWindows:
    """What a dataset's per-subject function returns: windows, one manifest row each, and notes."""

    windows: np.ndarray
    rows: list[dict[str, Any]]
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildReport:
    out: Path
    processed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_windows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "n_windows": self.n_windows,
            "processed": self.processed,
            "reused": self.reused,
            "skipped": self.skipped,
            "n_skipped": len(self.skipped),
            "notes": self.notes,
        }


SubjectFn = Callable[[str, Sequence[Path], Mapping[str, Any]], SubjectWindows]


def fingerprint(paths: Sequence[Path]) -> list[list[Any]]:
    """Cheap identity of source files: name, size and modification time."""
    return [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in sorted(paths)]


def build_shards(
    out: str | Path,
    subjects: Mapping[str, Sequence[Path]],
    process: SubjectFn,
    protocol: Mapping[str, Any],
    *,
    jobs: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
) -> BuildReport:
    """Preprocess ``subjects`` (id → source files) with ``process`` into ``out``; reuse valid shards.

    ``process`` must be a module-level function (it runs in worker processes). A :class:`DataError`
    aborts the build unless ``skip_bad``, in which case the subject is skipped, counted and reported.
    """
    out = Path(out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    proto_hash = sha256_json(dict(protocol))
    report = BuildReport(out=out)
    todo: dict[str, Sequence[Path]] = {}
    for subject, paths in subjects.items():
        if _shard_valid(out, subject, proto_hash, paths):
            report.reused.append(subject)
        else:
            todo[subject] = paths

    with _progress(progress, len(subjects), len(report.reused)) as advance:
        if jobs <= 1:
            results = (_run_one(out, s, p, process, protocol, proto_hash) for s, p in todo.items())
            for result in results:
                _collect(report, result, skip_bad)
                advance()
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                futures = [pool.submit(_run_one, out, s, p, process, protocol, proto_hash) for s, p in todo.items()]
                try:
                    for future in as_completed(futures):
                        _collect(report, future.result(), skip_bad)
                        advance()
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)  # subjects not yet started are not run
                    raise

    kept = sorted(set(report.processed) | set(report.reused))
    frames = [pd.read_csv(out / "shards" / f"{s}.csv", dtype={"subject": str, "session": str}) for s in kept]
    manifest = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MANIFEST_COLUMNS)
    report.n_windows = len(manifest)
    for s in kept:
        note = json.loads((out / "shards" / f"{s}.json").read_text()).get("notes") or {}
        if note:
            report.notes[s] = note
    write_text(out / "manifest.csv", manifest.to_csv(index=False))
    write_json(out / "protocol.json", {"hash": proto_hash, **protocol})
    write_json(out / "report.json", report.to_dict())
    report.processed.sort()
    report.reused.sort()
    return report


def _shard_valid(out: Path, subject: str, proto_hash: str, paths: Sequence[Path]) -> bool:
    side = out / "shards" / f"{subject}.json"
    if not (side.is_file() and (out / "shards" / f"{subject}.npy").is_file()):
        return False
    if not all(p.is_file() for p in paths):
        return False  # the source is gone: processing it again reports the missing file
    meta = json.loads(side.read_text())
    return meta.get("protocol_hash") == proto_hash and meta.get("sources") == fingerprint(paths)


def _run_one(
    out: Path, subject: str, paths: Sequence[Path], process: SubjectFn, protocol: Mapping[str, Any], h: str
) -> tuple[str, str | None, int]:
    try:
        result = process(subject, paths, protocol)
    except DataError as err:
        return subject, str(err), 0
    if len(result.rows) != len(result.windows):
        raise RuntimeError(f"subject {subject}: {len(result.rows)} manifest rows for {len(result.windows)} windows")
    rows = pd.DataFrame(result.rows)
    rows["shard"] = f"shards/{subject}.npy"
    rows["row"] = np.arange(len(rows))
    write_npy(out / "shards" / f"{subject}.npy", np.ascontiguousarray(result.windows, dtype=np.float32))
    write_text(out / "shards" / f"{subject}.csv", rows.to_csv(index=False))
    # The sidecar goes last: a shard without a matching sidecar is rebuilt on the next run.
    write_json(
        out / "shards" / f"{subject}.json",
        {"protocol_hash": h, "sources": fingerprint(paths), "n_windows": len(rows), "notes": result.notes},
    )
    return subject, None, len(rows)


def _collect(report: BuildReport, result: tuple[str, str | None, int], skip_bad: bool) -> None:
    subject, error, _ = result
    if error is None:
        report.processed.append(subject)
        return
    if not skip_bad:
        raise DataError(None, f"{error} (use --skip-bad to skip such subjects and list them in the report)")
    report.skipped[subject] = error


class _progress:
    """A rich progress bar over subjects (silent when ``enabled`` is false or output is not a terminal)."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.enabled, self.total, self.done = enabled and live_progress_ok(), total, done

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self.bar = Progress(transient=not os.isatty(1))
        self.bar.start()
        task = self.bar.add_task("subjects", total=self.total, completed=self.done)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()
