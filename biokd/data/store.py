"""The store of preprocessed items, for every dataset: memory-mappable per-subject shards plus a manifest.

Layout of an output folder::

    protocol.json                   the protocol and its data spec (and their hash); a change never reuses shards
    manifest.csv                    one row per item: the dataset's metadata columns, split, shard, row
    report.json                     processed / reused / skipped subjects, with reasons and notes
    shards/<subject>.<input>.npy    one array per named input (and per array target), ``(n_items, ...)``
    shards/<subject>.csv            the manifest rows of that subject
    shards/<subject>.<table>.csv    optional per-subject tables (e.g. a glucose grid for plots)
    shards/<subject>.json           sidecar: protocol hash, source fingerprints, arrays and item count
    stages/<name>.npz, .json        group-fitted stages (fitted on the training split; see :mod:`.stages`)
    .lock                           held while a build writes (a second writer is refused)

Subjects are processed in worker processes that write their own shard (atomically) and die with their
parent, so peak memory stays that of one subject whatever their number. The sidecar is written last; the
reader checks every shard's sidecar against ``protocol.json``, so shards of two protocols are never mixed.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._console import live_progress_ok
from .._io import sha256_json, write_json, write_npy, write_text
from ..errors import DataError
from .spec import DataSpec

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class SubjectItems:
    """What a dataset's per-subject function returns: named arrays, one manifest row per item, notes."""

    arrays: dict[str, np.ndarray]
    rows: list[dict[str, Any]]
    notes: dict[str, Any] = field(default_factory=dict)
    #: Optional per-subject tables written beside the shard (not read by the reader).
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass
class BuildReport:
    out: Path
    processed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_items: int = 0

    @property
    def n_windows(self) -> int:
        return self.n_items

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "n_items": self.n_items,
            "n_windows": self.n_items,
            "processed": self.processed,
            "reused": self.reused,
            "skipped": self.skipped,
            "n_skipped": len(self.skipped),
            "notes": self.notes,
        }


SubjectFn = Callable[[str, Sequence[Path], Mapping[str, Any]], SubjectItems]


def fingerprint(paths: Sequence[Path]) -> list[list[Any]]:
    """Cheap identity of source files: name, size and modification time."""
    return [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in sorted(paths)]


def protocol_with_spec(protocol: Mapping[str, Any], spec: DataSpec) -> dict[str, Any]:
    return {**protocol, "dataset": spec.dataset, "spec": spec.to_dict()}


def build_store(
    out: str | Path,
    subjects: Mapping[str, Sequence[Path]],
    process: SubjectFn,
    protocol: Mapping[str, Any],
    spec: DataSpec,
    *,
    jobs: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
    scheduler: str | None = None,
) -> BuildReport:
    """Preprocess ``subjects`` (id → source files) with ``process`` into ``out``; reuse valid shards.

    ``process`` must be a module-level function (it runs in worker processes, or on Dask workers when
    ``scheduler`` names a cluster). A :class:`DataError` aborts the build unless ``skip_bad``, in which case
    the subject is skipped, counted and reported; a build that keeps no item at all is an error.
    """
    out = Path(out)
    protocol = protocol_with_spec(protocol, spec)
    proto_hash = sha256_json(protocol)
    for subject in subjects:
        if not SAFE_NAME.match(subject):
            raise DataError(None, f"subject id {subject!r} is not a safe file name")
    prepare_out(out, str(protocol.get("dataset")))
    with folder_lock(out):
        _retire_old_protocol(out, proto_hash)
        (out / "shards").mkdir(parents=True, exist_ok=True)
        sweep_temporaries(out / "shards")
        report = BuildReport(out=out)
        todo: dict[str, Sequence[Path]] = {}
        for subject, paths in subjects.items():
            if _shard_valid(out, subject, proto_hash, paths):
                report.reused.append(subject)
            else:
                todo[subject] = paths
        args = [(out, s, p, process, protocol, proto_hash) for s, p in todo.items()]
        with _progress(progress, len(subjects), len(report.reused)) as advance:
            for result in _run_all(args, jobs, scheduler):
                _collect(report, result, skip_bad)
                advance()
        _finish(out, report, protocol, proto_hash)
    return report


def _run_all(args: list[tuple], jobs: int, scheduler: str | None) -> Iterator[tuple[str, str | None, int]]:
    if scheduler:
        from .distributed import run_on_dask

        yield from run_on_dask(scheduler, _run_one, args)
    elif jobs <= 1:
        for a in args:
            yield _run_one(*a)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=die_with_parent) as pool:
            futures = [pool.submit(_run_one, *a) for a in args]
            try:
                for future in as_completed(futures):
                    yield future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # subjects not yet started are not run
                raise


def _finish(out: Path, report: BuildReport, protocol: Mapping[str, Any], proto_hash: str) -> None:
    kept = sorted(set(report.processed) | set(report.reused))
    if not kept:
        why = "; ".join(f"{s}: {e}" for s, e in list(report.skipped.items())[:5])
        raise DataError(out, f"no subject could be preprocessed ({len(report.skipped)} skipped: {why})")
    frames = [pd.read_csv(out / "shards" / f"{s}.csv", dtype={"subject": str, "session": str}) for s in kept]
    manifest = pd.concat(frames, ignore_index=True)
    if len(manifest) == 0:
        raise DataError(out, f"the build produced no items from {len(kept)} subjects; see {out / 'report.json'}")
    report.n_items = len(manifest)
    for s in kept:
        note = json.loads((out / "shards" / f"{s}.json").read_text()).get("notes") or {}
        if note:
            report.notes[s] = note
    report.processed.sort()
    report.reused.sort()
    write_text(out / "manifest.csv", manifest.to_csv(index=False))
    write_json(out / "report.json", report.to_dict())
    # protocol.json last: until it is written the folder is not readable as a dataset
    write_json(out / "protocol.json", {"hash": proto_hash, **protocol})


def prepare_out(out: Path, dataset: str) -> None:
    """Refuse an ``--out`` that is a file, lies under a file, is not writable or holds another dataset."""
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            raise DataError(out, f"cannot write here: {parent} is a file, not a folder")
        if parent.exists():
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(out, f"cannot create the output folder ({err.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise DataError(out, "the output folder is not writable")
    proto = out / "protocol.json"
    if proto.is_file():
        try:
            other = json.loads(proto.read_text()).get("dataset")
        except (OSError, ValueError):
            other = None
        if other and other != dataset:
            raise DataError(out, f"holds a preprocessed {other!r} dataset; choose another --out for {dataset!r}")


def _retire_old_protocol(out: Path, proto_hash: str) -> None:
    """A build with another protocol first makes the folder unreadable, so no mix of two protocols is ever read."""
    proto = out / "protocol.json"
    if not proto.is_file():
        return
    try:
        old = json.loads(proto.read_text()).get("hash")
    except (OSError, ValueError):
        old = None
    if old != proto_hash:
        proto.unlink()
        (out / "manifest.csv").unlink(missing_ok=True)


@contextlib.contextmanager
def folder_lock(folder: Path, what: str = "a build") -> Iterator[None]:
    """Hold ``folder/.lock`` (pid and host inside); a second writer gets a clear error, a stale lock is taken over."""
    lock = folder / ".lock"
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock.read_text().strip() if lock.is_file() else ""
            if _alive(holder):
                raise DataError(
                    folder, f"{what} is already writing here ({holder}); wait for it or remove {lock}"
                ) from None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(holder: str) -> bool:
    host, _, pid = holder.partition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return bool(holder)  # another machine's lock: assume it is alive
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_temporaries(folder: Path) -> int:
    """Remove temporary files (``.name.XXXX.tmp``) left by a killed writer; returns how many."""
    n = 0
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n


def die_with_parent() -> None:
    """Worker initializer: on Linux, ask the kernel to end this process when its parent dies."""
    import signal
    import sys

    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the call
            os._exit(1)


def shard_files(out: Path, subject: str, keys: Sequence[str]) -> list[Path]:
    return [out / "shards" / f"{subject}.{k}.npy" for k in keys]


def _shard_valid(out: Path, subject: str, proto_hash: str, paths: Sequence[Path]) -> bool:
    side = out / "shards" / f"{subject}.json"
    if not side.is_file() or not all(p.is_file() for p in paths):
        return False  # a missing source is processed again, which reports the missing file
    try:
        meta = json.loads(side.read_text())
    except ValueError:
        return False
    files = shard_files(out, subject, meta.get("arrays", []))
    if not files or not all(f.is_file() for f in files):
        return False
    return meta.get("protocol_hash") == proto_hash and meta.get("sources") == fingerprint(paths)


def _run_one(
    out: Path, subject: str, paths: Sequence[Path], process: SubjectFn, protocol: Mapping[str, Any], h: str
) -> tuple[str, str | None, int]:
    try:
        result = process(subject, paths, protocol)
    except DataError as err:
        return subject, str(err), 0
    n = len(result.rows)
    for key, array in result.arrays.items():
        if len(array) != n:
            raise RuntimeError(f"subject {subject}: {n} manifest rows but {len(array)} items in {key!r}")
    rows = pd.DataFrame(result.rows)
    if n:
        rows["subject"] = rows["subject"].astype(str) if "subject" in rows else subject
    rows["shard"] = f"shards/{subject}"
    rows["row"] = np.arange(n)
    (out / "shards" / f"{subject}.json").unlink(missing_ok=True)  # invalid until the new sidecar lands
    for key, array in result.arrays.items():
        write_npy(out / "shards" / f"{subject}.{key}.npy", np.ascontiguousarray(array))
    for name, table in result.tables.items():
        write_text(out / "shards" / f"{subject}.{name}.csv", table.to_csv())
    write_text(out / "shards" / f"{subject}.csv", rows.to_csv(index=False))
    # The sidecar goes last: a shard without a matching sidecar is rebuilt on the next run.
    write_json(
        out / "shards" / f"{subject}.json",
        {
            "protocol_hash": h,
            "sources": fingerprint(paths),
            "arrays": sorted(result.arrays),
            "n_items": n,
            "notes": result.notes,
        },
    )
    return subject, None, n


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

        self.bar = Progress(transient=True)
        self.bar.start()
        task = self.bar.add_task("subjects", total=self.total, completed=self.done)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()
