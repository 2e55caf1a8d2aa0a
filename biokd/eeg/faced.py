"""FACED (Chen et al., Sci Data 2023) → 9-class emotion windows, CBraMod's protocol by default.

Reads the public release layout ``<root>/Processed_data/sub000.pkl … sub122.pkl`` (each a pickled array of
28 clips × 32 channels × 7500 samples, 30 s at 250 Hz, µV) and ``<root>/Recording_info.csv``, one subject
per worker process, and writes a shard folder (:mod:`biokd.data.store`). Pickles are read with an
allow-listing unpickler (:mod:`biokd.data.safe_pickle`): a file that asks for anything but an array is
refused, never executed. See ``datasets/faced.md`` for the release, its quirks and the protocol.

``source="raw"`` reads the raw Neuracle recordings instead, ``<root>/Data/subNNN/data.bdf`` (continued in
``data.1.bdf``, ``data.2.bdf`` … if split) with the event codes in ``evt.bdf`` (BDF+ annotations: the video id
1–28, then 101 at clip start, then 102 at clip end), cuts the last 30 s before each clip's end code, picks the 32
channels by name, resamples to 250 Hz and continues like the processed arrays. Layout and codes follow public
readers of the release (unconfirmed against the official code); every one is a :class:`FacedProtocol` field. No
filtering, ICA or re-referencing is done, so raw windows are not the processed release's values.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path, write_json, write_text
from ..config import from_known_keys
from ..data.safe_pickle import load_numpy_pickle
from ..data.spec import DataSpec, InputSpec, TargetSpec
from ..data.store import BuildReport, SubjectItems, build_store
from ..errors import ConfigError, DataError
from ..splits import check_split_ranges

DATASET = "faced"
N_SUBJECTS = 123
N_CLIPS = 28
RELEASE_SFREQ = 250.0
CLIP_SECONDS = 30.0
RELEASE_SAMPLES = 7500
# Bumped whenever the processing below changes in a way the protocol fields do not show, so old shards rebuild.
PROCESSING_VERSION = 1

#: The 32 channels of ``Processed_data``, in array order (torcheeg's list plus the two mastoids).
CHANNELS = (
    "Fp1", "Fp2", "Fz", "F3", "F4", "F7", "F8", "FC1", "FC2", "FC5", "FC6", "Cz", "C3", "C4", "T7", "T8",
    "CP1", "CP2", "CP5", "CP6", "Pz", "P3", "P4", "P7", "P8", "PO3", "PO4", "Oz", "O1", "O2", "A2", "A1",
)  # fmt: skip
CLASS_NAMES = ("anger", "disgust", "fear", "sadness", "neutral", "amusement", "inspiration", "joy", "tenderness")
#: Class of each clip 1–28 (index 0 is clip 1): three clips per emotion, four neutral clips.
CLIP_CLASSES = tuple(c for c, count in enumerate((3, 3, 3, 3, 4, 3, 3, 3, 3)) for _ in range(count))

PROCESSED_DIRS = ("Processed_data", "Processed_Data")  # the data and the README spell it differently
INFO_CSV = "Recording_info.csv"
_SUBJECT_FILE = re.compile(r"^sub(\d{3})\.pkl$")
_RAW_SUBJECT_DIR = re.compile(r"^(?i:sub)(\d{3})$")
_SUBJECT_COLUMNS = ("sub", "subject", "subjects", "subject_id", "subjectid", "sub_id", "subid", "participant", "id")


@dataclass(frozen=True)
class FacedProtocol:
    """Every setting of the preprocessing; the defaults are CBraMod's (``preprocessing_faced.py``)."""

    #: ``processed`` reads ``Processed_data/*.pkl``; ``raw`` reads ``Data/subNNN/*.bdf`` (see the raw_* fields)
    source: str = "processed"
    #: rate after resampling each 30-s clip with ``scipy.signal.resample`` (FFT); 250 keeps the release rate
    sfreq: float = 200.0
    window_seconds: float = 10.0
    #: step between window starts; None: non-overlapping windows
    stride_seconds: float | None = None
    #: channels to keep, in this order; None: all 32 in release order
    channels: tuple[str, ...] | None = None
    #: amplitude factor applied by the reader (µV → units of 100 µV, as every CBraMod loader does)
    scale: float = 0.01
    #: inclusive subject-index ranges of each split (sub000 is index 0)
    train: tuple[int, int] = (0, 79)
    val: tuple[int, int] = (80, 99)
    test: tuple[int, int] = (100, 122)
    # --- source="raw" only (ignored, and left out of protocol.json, for "processed"); conventions unconfirmed ---
    #: seconds kept before each clip's end code; the processed release keeps 30 (shorter only for tests)
    clip_seconds: float = CLIP_SECONDS
    #: folder of the subject folders ``subNNN`` under the release root
    raw_dir: str = "Data"
    #: the recording in each subject folder; continuations ``data.1.bdf``, ``data.2.bdf`` … are appended in order
    raw_data_file: str = "data.bdf"
    #: BDF+ file of event annotations next to it; if absent, the recording's own annotations are used
    raw_events_file: str = "evt.bdf"
    #: event code at a clip's start and at its end; the clip's video id (1–28) is the code sent before them
    raw_start_code: int = 101
    raw_end_code: int = 102
    #: ``NAME=LABEL``: recording channel label also accepted for a protocol channel (labels match case-blind)
    raw_aliases: tuple[str, ...] = ("A2=HEOR", "A1=HEOL", "A2=M2", "A1=M1", "T7=T3", "T8=T4", "P7=T5", "P8=T6")

    def __post_init__(self) -> None:
        if self.source not in ("processed", "raw"):
            raise ConfigError(f"source: must be 'processed' or 'raw'; got {self.source!r}")
        if self.sfreq <= 0 or self.window_seconds <= 0:
            raise ConfigError(f"sfreq and window_seconds must be positive; got {self.sfreq} and {self.window_seconds}")
        if self.clip_seconds <= 0 or (self.source == "processed" and self.clip_seconds != CLIP_SECONDS):
            raise ConfigError(
                f"clip_seconds: must be positive, and {CLIP_SECONDS:g} (the release's) unless source='raw'; "
                f"got {self.clip_seconds}"
            )
        if abs(self.clip_seconds * RELEASE_SFREQ - round(self.clip_seconds * RELEASE_SFREQ)) > 1e-6:
            raise ConfigError(f"clip_seconds × {RELEASE_SFREQ:g} Hz must be a whole number; got {self.clip_seconds}")
        if self.window_seconds > self.clip_seconds:
            raise ConfigError(f"window_seconds ({self.window_seconds}) is longer than a clip ({self.clip_seconds:g} s)")
        for alias in self.raw_aliases:
            name, _, label = str(alias).partition("=")
            if name.strip() not in CHANNELS or not label.strip():
                raise ConfigError(f"raw_aliases: {alias!r} is not CHANNEL=LABEL with a FACED channel name")
        if self.stride_seconds is not None and self.stride_seconds <= 0:
            raise ConfigError(f"stride_seconds must be positive or null; got {self.stride_seconds}")
        if self.n_times < 1 or abs(self.n_times - self.window_seconds * self.sfreq) > 1e-6:
            raise ConfigError(
                f"window_seconds × sfreq = {self.window_seconds * self.sfreq:g} must be a whole number of samples"
            )
        if self.channels is not None:
            if unknown := [c for c in self.channels if c not in CHANNELS]:
                raise ConfigError(f"channels: {unknown} are not FACED channels; valid: {', '.join(CHANNELS)}")
            if len(set(self.channels)) != len(self.channels):
                raise ConfigError(f"channels: listed twice in {list(self.channels)}")
        check_split_ranges(self.split_ranges())

    @property
    def n_times(self) -> int:
        """Samples per window at ``sfreq``."""
        return round(self.window_seconds * self.sfreq)

    @property
    def release_samples(self) -> int:
        """Samples per clip at the release's 250 Hz (7500)."""
        return round(self.clip_seconds * RELEASE_SFREQ)

    @property
    def clip_samples(self) -> int:
        """Samples per clip after resampling (7500 → 6000 by default)."""
        return round(self.release_samples * self.sfreq / RELEASE_SFREQ)

    @property
    def ch_names(self) -> list[str]:
        return list(self.channels) if self.channels is not None else list(CHANNELS)

    def window_starts(self) -> list[int]:
        """Start sample of each window within a resampled clip."""
        step = self.n_times if self.stride_seconds is None else round(self.stride_seconds * self.sfreq)
        return list(range(0, self.clip_samples - self.n_times + 1, max(step, 1)))

    def split_ranges(self) -> dict[str, tuple[int, int]]:
        return {"train": tuple(self.train), "val": tuple(self.val), "test": tuple(self.test)}  # type: ignore[dict-item]

    def split_of(self, index: int) -> str | None:
        """The split holding subject index ``index``, or None if no range covers it."""
        from ..splits import fixed_split

        return fixed_split(index, self.split_ranges())

    def to_protocol(self) -> dict[str, Any]:
        """What ``protocol.json`` holds (and what the shard hash covers)."""
        fields = dataclasses.asdict(self)
        if self.source == "processed":  # the raw-only settings do not change these shards (nor their hash)
            for name in _RAW_FIELDS:
                fields.pop(name)
        return {
            "dataset": DATASET,
            "signal_key": "eeg",
            "units": "uV",
            "ch_names": self.ch_names,
            "class_names": list(CLASS_NAMES),
            "n_times": self.n_times,
            "processing_version": PROCESSING_VERSION,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()},
        }

    def spec(self) -> DataSpec:
        """The item contract: ``eeg`` ``(channel, time)`` as the reader delivers it (scaled) and the classes."""
        ch = self.ch_names
        unit = "uV" if self.scale == 1 else f"{1 / self.scale:g} uV"
        eeg = InputSpec(
            "eeg", [len(ch), self.n_times], ["channel", "time"], unit=unit, sfreq=self.sfreq, labels={"channel": ch}
        )
        return DataSpec(DATASET, [eeg], TargetSpec("classification", classes=list(CLASS_NAMES)), ["subject", "session"])

    @classmethod
    def from_protocol(cls, protocol: Mapping[str, Any]) -> FacedProtocol:
        return from_known_keys(cls, dict(protocol))


_RAW_FIELDS = ("clip_seconds", "raw_dir", "raw_data_file", "raw_events_file", "raw_start_code", "raw_end_code",
               "raw_aliases")  # fmt: skip


def subject_id(index: int) -> str:
    return f"sub{index:03d}"


def processed_dir(root: str | Path) -> Path:
    """``<root>/Processed_data`` (or the README's spelling ``Processed_Data``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "not a folder; expected the FACED release folder holding Processed_data/")
    found = [root / name for name in PROCESSED_DIRS if (root / name).is_dir()]
    if len(found) > 1 and not found[0].samefile(found[1]):
        raise DataError(root, f"both {found[0].name}/ and {found[1].name}/ exist; keep only one")
    if not found:
        nested = sorted(p for name in PROCESSED_DIRS for p in root.rglob(name) if p.is_dir())[:1]
        hint = f" (did you mean {nested[0].parent}?)" if nested else ""
        raise DataError(root, "no Processed_data/ folder here; expected <root>/Processed_data/sub000.pkl" + hint)
    return found[0]


def find_subject_files(root: str | Path) -> dict[int, Path]:
    """Subject index → ``Processed_data/subNNN.pkl``; other entries of the folder are ignored."""
    folder = processed_dir(root)
    return {int(m.group(1)): p for p in sorted(folder.iterdir()) if (m := _SUBJECT_FILE.match(p.name)) and p.is_file()}


def raw_dir(root: str | Path, protocol: FacedProtocol | None = None) -> Path:
    """``<root>/Data``, the folder of the raw subject folders ``subNNN``."""
    root = Path(root)
    folder = root / (protocol or FacedProtocol(source="raw")).raw_dir
    if not root.is_dir():
        raise DataError(root, f"not a folder; expected the FACED release folder holding {folder.name}/")
    if not folder.is_dir():
        raise DataError(folder, "missing: source='raw' reads <root>/Data/sub000/data.bdf (set raw_dir if elsewhere)")
    return folder


def raw_recording_files(folder: Path, protocol: FacedProtocol) -> list[Path]:
    """The recording of one subject folder and its continuations, in order, then its event file if present."""
    stem, dot, ext = protocol.raw_data_file.rpartition(".")
    if not dot:
        stem, ext = protocol.raw_data_file, ""
    part = re.compile(rf"^{re.escape(stem)}\.(\d+){re.escape(dot + ext)}$", re.IGNORECASE)
    parts = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := part.match(p.name)) and p.is_file())
    files = [folder / protocol.raw_data_file, *(p for _, p in parts)]
    events = folder / protocol.raw_events_file
    return [*files, events] if events.is_file() else files


def find_raw_subjects(root: str | Path, protocol: FacedProtocol) -> dict[int, Path]:
    """Subject index → its folder ``Data/subNNN`` (``SubNNN`` too); other entries are ignored."""
    folder = raw_dir(root, protocol)
    return {
        int(m.group(1)): p for p in sorted(folder.iterdir()) if (m := _RAW_SUBJECT_DIR.match(p.name)) and p.is_dir()
    }


def read_recording_info(root: str | Path) -> dict[int, dict[str, Any]]:
    """Subject index → its row of ``Recording_info.csv`` (columns found by name; header spellings vary)."""
    import pandas as pd

    path = Path(root) / INFO_CSV
    if not path.is_file():
        raise DataError(path, "missing: the release ships Recording_info.csv at its root (Synapse syn50614194)")
    table = None
    for encoding in ("utf-8-sig", "gbk", "latin1"):
        try:
            table = pd.read_csv(path, dtype=str, encoding=encoding, skipinitialspace=True)
            break
        except UnicodeDecodeError:
            continue
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise DataError(path, f"not a readable CSV table ({err})") from None
    if table is None:
        raise DataError(path, "not a readable CSV table (unknown text encoding)")
    table.columns = [str(c).strip() for c in table.columns]
    keys = {re.sub(r"[\s.]+", "_", c.lower()): c for c in table.columns}
    subject_col = next((keys[k] for k in _SUBJECT_COLUMNS if k in keys), None)
    rate_col = next((c for k, c in keys.items() if "rate" in k or "sfreq" in k or k in ("fs", "srate")), None)
    if subject_col is None or rate_col is None:
        what = " and ".join(n for n, c in (("subject", subject_col), ("sampling rate", rate_col)) if c is None)
        raise DataError(path, f"no {what} column; found columns {list(table.columns)}")
    unit_col = next((c for k, c in keys.items() if "unit" in k), None)
    info: dict[int, dict[str, Any]] = {}
    for line, row in enumerate(table.to_dict("records"), start=2):
        raw_id = str(row[subject_col]).strip()
        match = re.fullmatch(r"(?i)(?:sub|s)?_?(\d{1,3})", raw_id)
        if match is None:
            raise DataError(path, f"line {line}: subject {raw_id!r} is not like sub000 or 0")
        index = int(match.group(1))
        if index in info:
            raise DataError(path, f"line {line}: subject {subject_id(index)} is listed twice")
        rate = re.search(r"\d+(?:\.\d+)?", str(row[rate_col]))
        if rate is None or float(rate.group()) <= 0:
            raise DataError(path, f"line {line}: sampling rate {row[rate_col]!r} of {subject_id(index)} is not a rate")
        info[index] = {"sfreq": float(rate.group()), "unit": str(row[unit_col]).strip() if unit_col else None}
    return info


def preprocess_faced(
    root: str | Path,
    out: str | Path,
    subjects: Iterable[int | str] | None = None,
    protocol: FacedProtocol | None = None,
    jobs: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
    scheduler: str | None = None,
) -> BuildReport:
    """Turn a FACED release folder into a shard folder of labelled windows; valid old shards are reused.

    ``subjects`` are indices 0–122 or ids ``sub000``; default: every subject of ``Processed_data`` and, when
    present, of ``Recording_info.csv``, which must then agree (the report says which was used). A missing,
    extra or damaged subject raises :class:`DataError` naming the file, unless ``skip_bad``: then it is skipped,
    counted and named in ``report.json``.
    """
    protocol = protocol or FacedProtocol()
    root = Path(root)
    raw = protocol.source == "raw"
    if raw:
        folders = find_raw_subjects(root, protocol)
        files = {i: f / protocol.raw_data_file for i, f in folders.items() if (f / protocol.raw_data_file).is_file()}
        source_dir = raw_dir(root, protocol)
    else:
        files = find_subject_files(root)
        source_dir = processed_dir(root)
    csv_path = root / INFO_CSV
    # Recording_info.csv is optional (CBraMod's own script reads Processed_data alone); when present, its subject
    # list is cross-checked against the files.
    listed = csv_path.is_file()
    info = read_recording_info(root) if listed else {}
    found = set(files) | set(info)
    wanted = sorted(found if subjects is None else {_subject_index(s) for s in subjects})

    problems: dict[int, DataError] = {}
    for index in wanted:
        sid = subject_id(index)
        if index not in files:
            if raw:
                expected = folders.get(index, source_dir / sid) / protocol.raw_data_file
                what = "one recording per subject folder"
            else:
                expected, what = source_dir / f"{sid}.pkl", "one pickle per subject"
            listed = "listed in Recording_info.csv but " if index in info else ""
            problems[index] = DataError(expected, f"{listed}missing (expected {what})")
        elif listed and index not in info:
            problems[index] = DataError(files[index], f"{sid} is not listed in {csv_path}")
        elif protocol.split_of(index) is None:
            problems[index] = DataError(
                files[index],
                f"{sid} is not one of the protocol's subjects (train {protocol.train}, val {protocol.val}, "
                f"test {protocol.test})",
            )
    if problems and not skip_bad:
        first = problems[min(problems)]
        more = f" ({len(problems) - 1} more such subjects)" if len(problems) > 1 else ""
        raise DataError(first.path, f"{first.problem}{more}; use --skip-bad to skip and list them")

    sources = {
        subject_id(i): raw_recording_files(files[i].parent, protocol) if raw else [files[i]]
        for i in wanted
        if i not in problems
    }
    report = build_store(
        out,
        sources,
        process_subject,
        protocol.to_protocol(),
        protocol.spec(),
        jobs=jobs,
        skip_bad=skip_bad,
        progress=progress,
        scheduler=scheduler,
    )
    report.skipped.update({subject_id(i): str(err) for i, err in problems.items()})
    report.skipped = dict(sorted(report.skipped.items()))
    suspect = {s: n["suspect_units"] for s, n in report.notes.items() if "suspect_units" in n}
    write_json(
        report.out / "report.json",
        {
            "dataset": DATASET,
            **report.to_dict(),
            "source": protocol.source,
            "processed_dir": source_dir.name,
            "recording_info_csv": str(csv_path) if listed else None,
            "subject_list": (
                f"{source_dir.name}/ cross-checked with {INFO_CSV}"
                if listed
                else f"{source_dir.name}/ alone ({INFO_CSV} absent: no cross-check, no recording details)"
            ),
            "recording_info": {
                subject_id(i): info[i] for i in wanted if i in info and subject_id(i) not in report.skipped
            },
            "suspect_units": suspect,
        },
    )
    return report


def _subject_index(subject: int | str) -> int:
    if isinstance(subject, int | np.integer):
        index = int(subject)
    else:
        match = re.fullmatch(r"(?i)(?:sub)?(\d{1,3})", str(subject).strip())
        if match is None:
            raise ConfigError(f"subject {subject!r} is not an index 0–{N_SUBJECTS - 1} or an id like sub000")
        index = int(match.group(1))
    if not 0 <= index < 1000:
        raise ConfigError(f"subject index {index} is out of range (FACED has sub000 … sub{N_SUBJECTS - 1:03d})")
    return index


def process_subject(subject: str, paths: Sequence[Path], protocol: Mapping[str, Any]) -> SubjectItems:
    """All windows of one subject (module level: it runs in spawn worker processes)."""
    from scipy.signal import resample

    proto = FacedProtocol.from_protocol(protocol)
    index = int(subject[3:])
    if proto.source == "raw":
        data = read_raw_clips(paths, proto)
        path = paths[0]
    else:
        (path,) = paths
        data = load_numpy_pickle(path)
    expected = (N_CLIPS, len(CHANNELS), proto.release_samples)
    if data.shape != expected:
        raise DataError(
            path,
            f"array of shape {data.shape}; expected {expected} (28 clips × 32 channels × 7500 samples = 30 s "
            "at 250 Hz)",
        )
    if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        raise DataError(path, f"array of dtype {data.dtype}; expected real numbers")
    if not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise DataError(path, f"{bad} NaN or infinite values")

    picks = [CHANNELS.index(c) for c in proto.ch_names]
    x = data[:, picks, :].astype(np.float64)
    if proto.clip_samples != proto.release_samples:
        x = resample(x, proto.clip_samples, axis=-1)
    starts = proto.window_starts()
    n = proto.n_times
    windows = np.stack([x[:, :, s : s + n] for s in starts], axis=1).reshape(-1, len(picks), n)
    split = proto.split_of(index)
    rows = [
        {
            "subject": subject,
            "session": "1",
            "run": clip,
            "label": CLIP_CLASSES[clip - 1],
            "label_name": CLASS_NAMES[CLIP_CLASSES[clip - 1]],
            "onset_s": round(start / proto.sfreq, 4),
            "split": split,
        }
        for clip in range(1, N_CLIPS + 1)
        for start in starts
    ]
    notes: dict[str, Any] = {}
    spread = float(np.median(np.std(data, axis=-1)))
    if spread < 1e-2:  # EEG in µV varies by several units; in volts by ~1e-5
        notes["suspect_units"] = f"median channel std {spread:.3g}: these values look like volts, not µV"
    return SubjectItems(arrays={"eeg": windows.astype(np.float32)}, rows=rows, notes=notes)


def read_raw_clips(paths: Sequence[Path], protocol: FacedProtocol) -> np.ndarray:
    """The 28 clips of one raw recording as the processed release shapes them: (28, 32, clip × 250 Hz), µV.

    ``paths``: the recording (and its continuations), then optionally the event file (:func:`raw_recording_files`).
    Clip ``v`` (video id ``v``, array row ``v - 1``) ends at the end code that follows ``v`` and a start code;
    the ``clip_seconds`` before that end are kept. Channels are picked by name (:attr:`FacedProtocol.raw_aliases`).
    """
    import mne

    events_name = protocol.raw_events_file.lower()
    recordings = [p for p in paths if p.name.lower() != events_name]
    events_path = next((p for p in paths if p.name.lower() == events_name), None)
    raws = []
    for path in recordings:
        try:
            raws.append(mne.io.read_raw_bdf(path, preload=False, verbose="error"))
        except (OSError, ValueError, RuntimeError) as err:
            raise DataError(path, f"not a readable BDF recording ({err})") from None
    if len({r.info["sfreq"] for r in raws}) > 1:
        raise DataError(recordings[0], "its continuation files have different sampling rates")
    raw = mne.concatenate_raws(raws, verbose="error") if len(raws) > 1 else raws[0]
    fs = float(raw.info["sfreq"])
    if events_path is not None:
        try:
            annotations = mne.read_annotations(events_path)
        except (OSError, ValueError, RuntimeError) as err:
            raise DataError(events_path, f"not a readable BDF+ event file ({err})") from None
        source = events_path
    else:
        annotations, source = raws[0].annotations, recordings[0]
    ends = _clip_ends(source, list(annotations.onset), list(annotations.description), protocol)

    picks = _raw_channel_picks(recordings[0], raw.ch_names, protocol)
    n = round(protocol.clip_seconds * fs)
    if abs(n - protocol.clip_seconds * fs) > 1e-6:
        raise DataError(recordings[0], f"clip_seconds × {fs:g} Hz = {protocol.clip_seconds * fs:g}: not whole samples")
    clips = np.empty((N_CLIPS, len(CHANNELS), protocol.release_samples))
    ratio = Fraction(RELEASE_SFREQ / fs).limit_denominator(1000)
    for video, (start_s, end_s) in sorted(ends.items()):
        stop = round(end_s * fs)
        if end_s - start_s < protocol.clip_seconds - 0.5 / fs or stop - n < 0 or stop > raw.n_times:
            raise DataError(
                source,
                f"video {video}: clip {start_s:.3f}–{end_s:.3f} s is shorter than clip_seconds "
                f"({protocol.clip_seconds:g}) or outside the recording ({raw.n_times / fs:.3f} s)",
            )
        x = raw.get_data(picks=picks, start=stop - n, stop=stop) * 1e6  # MNE reads volts
        if ratio != 1:
            from scipy.signal import resample_poly

            x = resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)
        if x.shape[-1] != protocol.release_samples:
            raise DataError(recordings[0], f"{fs:g} Hz does not resample to {RELEASE_SFREQ:g} Hz in whole samples")
        clips[video - 1] = x
    return clips


def _clip_ends(
    path: Path, onsets: Sequence[float], codes: Sequence[str], protocol: FacedProtocol
) -> dict[int, tuple[float, float]]:
    """Video id → (start, end) seconds: a video id code, then the start code, then the end code."""
    video: int | None = None
    start: float | None = None
    spans: dict[int, tuple[float, float]] = {}
    for onset, text in sorted(zip(onsets, codes, strict=True), key=lambda e: e[0]):
        try:
            code = int(float(str(text).strip()))
        except ValueError:
            continue  # free-text annotations carry no trigger
        if 1 <= code <= N_CLIPS:
            video, start = code, None
        elif code == protocol.raw_start_code:
            start = float(onset) if video is not None else None
        elif code == protocol.raw_end_code:
            if video is not None and start is not None:
                if video in spans:
                    raise DataError(path, f"video {video} has two clip-end codes ({protocol.raw_end_code})")
                spans[video] = (start, float(onset))
            video, start = None, None
    if missing := [v for v in range(1, N_CLIPS + 1) if v not in spans]:
        raise DataError(
            path,
            f"no clip-end trigger for videos {missing} (expected each video id 1–{N_CLIPS}, then code "
            f"{protocol.raw_start_code}, then {protocol.raw_end_code}; found {len(spans)} of {N_CLIPS})",
        )
    return spans


def _raw_channel_picks(path: Path, ch_names: Sequence[str], protocol: FacedProtocol) -> list[int]:
    """Index in ``ch_names`` of each of the 32 :data:`CHANNELS`, matched by name, case-blind, or an alias."""
    labels = {re.sub(r"^EEG\s+", "", c.strip(), flags=re.IGNORECASE).lower(): i for i, c in enumerate(ch_names)}
    aliases: dict[str, list[str]] = {}
    for alias in protocol.raw_aliases:
        name, _, label = alias.partition("=")
        aliases.setdefault(name.strip(), []).append(label.strip().lower())
    picks, missing = [], []
    for name in CHANNELS:
        found = [labels[k] for k in (name.lower(), *aliases.get(name, [])) if k in labels]
        if found:
            picks.append(found[0])
        else:
            missing.append(name)
    if missing:
        raise DataError(path, f"channels {missing} not found (labels: {', '.join(ch_names)}); see raw_aliases")
    return picks


# --- a synthetic release in the real layout, for tests and benchmarks -------------------------------------

#: Frontal and temporal channels that carry the planted class signal of :func:`write_synthetic_faced`.
_SIGNAL_CHANNELS = ("Fp1", "Fp2", "F3", "F4", "F7", "F8", "FC5", "FC6", "T7", "T8")


def write_synthetic_faced(
    root: str | Path,
    subjects: Iterable[int] = range(N_SUBJECTS),
    *,
    seed: int = 0,
    n_samples: int = RELEASE_SAMPLES,
    signal_uv: float = 4.0,
    noise_uv: float = 10.0,
    folder: str = PROCESSED_DIRS[0],
    dtype: Any = np.float32,
) -> Path:
    """Write a FACED-layout folder with generated EEG (µV) whose classes differ in band power; return ``root``.

    Each clip gets white plus slow noise, occipital alpha, and a rhythm at its class's frequency (4–24 Hz)
    on a class-specific pair of frontal/temporal channels, with per-subject gain and frequency jitter, so a
    model can learn the classes but not perfectly. Files are plain pickles of one ndarray each, like the release, plus a
    ``Recording_info.csv``. The numbers say nothing about real FACED.
    """
    root = Path(root)
    out = root / folder
    out.mkdir(parents=True, exist_ok=True)
    indices = sorted(set(int(s) for s in subjects))
    t = np.arange(n_samples) / RELEASE_SFREQ
    signal_idx = [CHANNELS.index(c) for c in _SIGNAL_CHANNELS]
    occipital = [CHANNELS.index(c) for c in ("O1", "O2", "Oz", "PO3", "PO4")]
    rows = []
    for index in indices:
        rng = np.random.default_rng([seed, index])
        gain = rng.uniform(0.7, 1.3)
        jitter = rng.normal(0.0, 0.3)
        x = _background(rng, (N_CLIPS, len(CHANNELS), n_samples), noise_uv)
        alpha = rng.uniform(3.0, 8.0) * np.sin(2 * np.pi * rng.uniform(9.5, 11.0) * t)
        x[:, occipital, :] += alpha
        for clip in range(N_CLIPS):
            label = CLIP_CLASSES[clip]
            freq = 4.0 + 2.5 * label + jitter
            phase = rng.uniform(0, 2 * np.pi)
            wave = signal_uv * gain * np.sin(2 * np.pi * freq * t + phase)
            pair = [signal_idx[label % len(signal_idx)], signal_idx[(3 * label + 1) % len(signal_idx)]]
            x[clip, pair, :] += wave
        with atomic_path(out / f"{subject_id(index)}.pkl") as tmp, open(tmp, "wb") as fh:
            pickle.dump(x.astype(dtype), fh)
        rows.append(f"{subject_id(index)},{int(rng.integers(17, 39))},{'FM'[int(rng.integers(0, 2))]},250,uV")
    header = "sub,Age,Gender,Sampling Rate,Unit"
    write_text(root / INFO_CSV, "\n".join([header, *rows]) + "\n")
    return root


def _background(rng: np.random.Generator, shape: tuple[int, int, int], noise_uv: float, step: int = 25) -> np.ndarray:
    """White noise plus a slow component (random knots every ``step`` samples, linearly joined), float32."""
    x = rng.standard_normal(shape, dtype=np.float32)
    x *= noise_uv * 0.6
    n_knots = shape[-1] // step + 2
    knots = rng.standard_normal((*shape[:-1], n_knots), dtype=np.float32) * np.float32(noise_uv * 0.8)
    frac = np.arange(step, dtype=np.float32) / step
    slow = knots[..., :-1, None] * (1 - frac) + knots[..., 1:, None] * frac
    x += slow.reshape(*shape[:-1], -1)[..., : shape[-1]]
    return x
