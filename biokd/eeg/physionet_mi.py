"""PhysioNet EEG Motor Movement/Imagery (EEGMMIDB 1.0.0) → motor-imagery windows, CBraMod's protocol by default.

Reads the release layout ``<root>/S001/S001R01.edf … <root>/S109/S109R14.edf`` (EDF+, 64 channels, annotations
T0/T1/T2) through MNE, one subject per worker process, and writes a shard folder (:mod:`biokd.data.store`).
See ``datasets/physionet-mi.md`` for the release, its quirks and the protocol.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._io import write_json
from ..config import from_known_keys
from ..data.spec import DataSpec, InputSpec, TargetSpec
from ..data.store import BuildReport, SubjectItems, build_store
from ..errors import ConfigError, DataError
from ..splits import check_split_ranges

DATASET = "physionet-mi"
N_SUBJECTS = 109
RELEASE_SFREQ = 160.0
CLASS_NAMES = ("left_fist", "right_fist", "both_fists", "both_feet")
REST_CLASS = "rest"
# Bumped whenever the processing below changes in a way the protocol fields do not show, so old shards rebuild.
PROCESSING_VERSION = 1

#: The 64 EEG channel labels of the release, in file order, exactly as the EDF headers spell them.
RELEASE_CHANNELS = (
    "Fc5.", "Fc3.", "Fc1.", "Fcz.", "Fc2.", "Fc4.", "Fc6.", "C5..", "C3..", "C1..", "Cz..", "C2..", "C4..",
    "C6..", "Cp5.", "Cp3.", "Cp1.", "Cpz.", "Cp2.", "Cp4.", "Cp6.", "Fp1.", "Fpz.", "Fp2.", "Af7.", "Af3.",
    "Afz.", "Af4.", "Af8.", "F7..", "F5..", "F3..", "F1..", "Fz..", "F2..", "F4..", "F6..", "F8..", "Ft7.",
    "Ft8.", "T7..", "T8..", "T9..", "T10.", "Tp7.", "Tp8.", "P7..", "P5..", "P3..", "P1..", "Pz..", "P2..",
    "P4..", "P6..", "P8..", "Po7.", "Po3.", "Poz.", "Po4.", "Po8.", "O1..", "Oz..", "O2..", "Iz..",
)  # fmt: skip

_SUBJECT_DIR = re.compile(r"^S(\d{3})$")
_RUN_FILE = re.compile(r"^S\d{3}R(\d{2})\.edf$")


@dataclass(frozen=True)
class PhysionetMIProtocol:
    """Every setting of the preprocessing; the defaults are CBraMod's (``preprocessing_physio.py``)."""

    runs: tuple[int, ...] = (4, 6, 8, 10, 12, 14)
    #: runs whose T1/T2 are left fist / right fist (classes 0 / 1); the defaults are the imagery runs
    left_right_runs: tuple[int, ...] = (4, 8, 12)
    #: runs whose T1/T2 are both fists / both feet (classes 2 / 3)
    fists_feet_runs: tuple[int, ...] = (6, 10, 14)
    #: keep T0 (rest) windows as a fifth class ``rest``; CBraMod drops them
    keep_rest: bool = False
    #: channels to keep, standard names (``FC5``, ``C3``…), in this order; None: all 64 in release order
    channels: tuple[str, ...] | None = None
    #: ``average`` (computed over all 64 channels, before picking) or ``none``
    reference: str = "average"
    l_freq: float | None = 0.3
    h_freq: float | None = None
    notch: float | None = 60.0
    sfreq: float = 200.0
    #: window start relative to the cue, and its length, in seconds (``n_times`` follows ``sfreq``)
    tmin: float = 0.0
    window_seconds: float = 4.0
    #: amplitude factor applied by the reader (µV → units of 100 µV, as every CBraMod loader does)
    scale: float = 0.01
    #: inclusive subject-number ranges of each split
    train: tuple[int, int] = (1, 70)
    val: tuple[int, int] = (71, 89)
    test: tuple[int, int] = (90, 109)

    def __post_init__(self) -> None:
        labelled = set(self.left_right_runs) | set(self.fists_feet_runs)
        if not self.runs:
            raise ConfigError("runs: at least one run is needed")
        if bad := [r for r in self.runs if not 1 <= r <= 14]:
            raise ConfigError(f"runs: EEGMMIDB has runs 1–14; got {bad}")
        if both := sorted(set(self.left_right_runs) & set(self.fists_feet_runs)):
            raise ConfigError(f"runs {both} are in both left_right_runs and fists_feet_runs")
        if unlabelled := [r for r in self.runs if r not in labelled]:
            raise ConfigError(
                f"runs {unlabelled} have no label mapping: add them to left_right_runs (T1/T2 = left/right "
                "fist) or fists_feet_runs (T1/T2 = both fists/both feet)"
            )
        if self.reference not in ("average", "none"):
            raise ConfigError(f"reference: must be 'average' or 'none'; got {self.reference!r}")
        if self.sfreq <= 0 or self.window_seconds <= 0:
            raise ConfigError(f"sfreq and window_seconds must be positive; got {self.sfreq} and {self.window_seconds}")
        if abs(self.window_seconds * self.sfreq - self.n_times) > 1e-6:
            raise ConfigError(
                f"window_seconds × sfreq = {self.window_seconds:g} s × {self.sfreq:g} Hz = "
                f"{self.window_seconds * self.sfreq:g}: must be a whole number of samples"
            )
        if self.l_freq is not None and self.h_freq is not None and self.h_freq <= self.l_freq:
            raise ConfigError(f"h_freq ({self.h_freq}) must be above l_freq ({self.l_freq})")
        if self.h_freq is not None and self.h_freq >= self.sfreq / 2:
            raise ConfigError(f"h_freq ({self.h_freq}) must be below the Nyquist frequency {self.sfreq / 2}")
        check_split_ranges(self.split_ranges())
        if self.channels is not None:
            known = standard_channel_names()
            if unknown := [c for c in self.channels if c not in known]:
                raise ConfigError(f"channels: {unknown} are not EEGMMIDB channels; valid: {', '.join(known)}")

    @property
    def n_times(self) -> int:
        """Samples per window at ``sfreq`` (``window_seconds`` long whatever the rate)."""
        return round(self.window_seconds * self.sfreq)

    @property
    def class_names(self) -> list[str]:
        return [*CLASS_NAMES, REST_CLASS] if self.keep_rest else list(CLASS_NAMES)

    def split_ranges(self) -> dict[str, tuple[int, int]]:
        return {"train": tuple(self.train), "val": tuple(self.val), "test": tuple(self.test)}  # type: ignore[dict-item]

    def split_of(self, subject: int) -> str | None:
        """The split holding subject number ``subject``, or None if no range covers it."""
        from ..splits import fixed_split

        return fixed_split(subject, self.split_ranges())

    def labels_of_run(self, run: int) -> dict[str, int]:
        """Annotation description → class index for one run."""
        labels = {"T1": 0, "T2": 1} if run in self.left_right_runs else {"T1": 2, "T2": 3}
        if self.keep_rest:
            labels["T0"] = len(CLASS_NAMES)
        return labels

    def to_protocol(self) -> dict[str, Any]:
        """What ``protocol.json`` holds (and what the shard hash covers)."""
        fields = dataclasses.asdict(self)
        return {
            "dataset": DATASET,
            "signal_key": "eeg",
            "units": "uV",
            "ch_names": list(self.channels) if self.channels is not None else standard_channel_names(),
            "class_names": self.class_names,
            "processing_version": PROCESSING_VERSION,
            "n_times": self.n_times,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()},
        }

    def spec(self) -> DataSpec:
        """The item contract: ``eeg`` ``(channel, time)`` as the reader delivers it (scaled) and the classes."""
        ch = list(self.channels) if self.channels is not None else standard_channel_names()
        unit = "uV" if self.scale == 1 else f"{1 / self.scale:g} uV"
        eeg = InputSpec(
            "eeg", [len(ch), self.n_times], ["channel", "time"], unit=unit, sfreq=self.sfreq, labels={"channel": ch}
        )
        return DataSpec(DATASET, [eeg], TargetSpec("classification", classes=self.class_names), ["subject", "session"])

    @classmethod
    def from_protocol(cls, protocol: Mapping[str, Any]) -> PhysionetMIProtocol:
        return from_known_keys(cls, dict(protocol))


def standard_channel_names() -> list[str]:
    """The 64 release labels as ``mne.datasets.eegbci.standardize`` renames them (``Fc5.`` → ``FC5``)."""
    return list(_standard_names())


@functools.cache
def _standard_names() -> tuple[str, ...]:
    import mne

    info = mne.create_info(list(RELEASE_CHANNELS), RELEASE_SFREQ, "eeg")
    raw = mne.io.RawArray(np.zeros((len(RELEASE_CHANNELS), 1)), info, verbose="error")
    mne.datasets.eegbci.standardize(raw)
    return tuple(raw.ch_names)


def subject_id(number: int) -> str:
    return f"S{number:03d}"


def run_path(root: str | Path, subject: int, run: int) -> Path:
    """Where the release keeps ``run`` of ``subject``: ``<root>/S001/S001R04.edf``."""
    return Path(root) / subject_id(subject) / f"{subject_id(subject)}R{run:02d}.edf"


def find_subjects(root: str | Path) -> list[int]:
    """Subject numbers with an ``S###`` folder under ``root``; other entries (RECORDS, wfdbcal, …) are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "not a folder; expected the EEGMMIDB release folder holding S001/ … S109/")
    found = sorted(int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := _SUBJECT_DIR.match(p.name)))
    if not found:
        hint = ""
        nested = [p for depth in range(1, 5) for p in sorted(root.glob("*/" * depth + "S001")) if p.is_dir()][:1]
        if nested:
            hint = f" (did you mean {nested[0].parent}?)"
        raise DataError(
            root,
            "no subject folders S001 … S109 here; expected the EEGMMIDB layout <root>/S001/S001R04.edf" + hint,
        )
    return found


def preprocess_physionet_mi(
    root: str | Path,
    out: str | Path,
    subjects: Iterable[int] | None = None,
    protocol: PhysionetMIProtocol | None = None,
    jobs: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
    scheduler: str | None = None,
) -> BuildReport:
    """Turn an EEGMMIDB release folder into a shard folder of labelled windows; valid old shards are reused.

    ``subjects`` are numbers 1–109 (default: every ``S###`` folder under ``root``). A damaged or incomplete
    subject raises :class:`DataError` naming the file, unless ``skip_bad``: then the whole subject is skipped
    and named in ``report.json``.
    """
    root = Path(root)
    protocol = protocol or PhysionetMIProtocol()
    available = find_subjects(root)
    numbers = available if subjects is None else sorted(set(subjects))
    if bad := [n for n in numbers if not 1 <= n <= N_SUBJECTS]:
        raise DataError(root, f"subject numbers must be 1–{N_SUBJECTS}; got {bad}")
    if uncovered := [n for n in numbers if protocol.split_of(n) is None]:
        raise ConfigError(
            f"subjects {uncovered} fall in no split range (train {protocol.train}, val {protocol.val}, "
            f"test {protocol.test})"
        )

    sources: dict[str, list[Path]] = {}
    missing: dict[str, str] = {}
    for n in numbers:
        paths = [run_path(root, n, run) for run in protocol.runs]
        absent = [p for p in paths if not p.is_file()]
        if absent:
            problem = f"missing run file (runs {list(protocol.runs)} of each subject are needed)"
            if not skip_bad:
                raise DataError(absent[0], f"{problem}; --skip-bad skips such subjects as a whole")
            missing[subject_id(n)] = f"{absent[0]}: {problem}; subject skipped as a whole"
            continue
        sources[subject_id(n)] = paths

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
    report.skipped.update(missing)
    report.skipped = dict(sorted(report.skipped.items()))
    past_end = {s: len(n.get("windows_past_end", [])) for s, n in report.notes.items()}
    beyond = {s: sum(w["where"] == BEYOND for w in n.get("windows_past_end", [])) for s, n in report.notes.items()}
    write_json(
        report.out / "report.json",
        {
            "dataset": DATASET,
            **report.to_dict(),
            "n_windows_past_end": sum(past_end.values()),
            "windows_past_end": {s: k for s, k in past_end.items() if k},
            # of those: cues whose onset lies beyond the end of the recording itself (MNE drops them on reading)
            "n_cues_beyond_recording": sum(beyond.values()),
            "cues_beyond_recording": {s: k for s, k in beyond.items() if k},
            "resampled_from": {s: n["original_sfreq"] for s, n in report.notes.items() if "original_sfreq" in n},
        },
    )
    return report


def process_subject(subject: str, paths: Sequence[Path], protocol: Mapping[str, Any]) -> SubjectItems:
    """All windows of one subject (module level: it runs in spawn worker processes)."""
    proto = PhysionetMIProtocol.from_protocol(protocol)
    number = int(subject[1:])
    split = proto.split_of(number)
    windows: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    sfreqs: dict[str, float] = {}
    past_end: list[dict[str, Any]] = []
    for path in paths:
        m = _RUN_FILE.match(Path(path).name)
        if m is None:
            raise DataError(path, "not an EEGMMIDB run file name (expected S###R##.edf)")
        run = int(m.group(1))
        try:
            x, onsets, events, orig_sfreq, late = _run_windows(Path(path), run, proto)
        except DataError as err:
            raise DataError(err.path, f"{err.problem}; --skip-bad skips subject {subject} as a whole") from None
        sfreqs[f"R{run:02d}"] = orig_sfreq
        past_end += [{"run": run, "onset_s": o, "event": e, "where": w} for o, e, w in late]
        labels = proto.labels_of_run(run)
        names = proto.class_names
        windows.append(x)
        rows += [
            {
                "subject": subject,
                "session": f"R{run:02d}",
                "run": run,
                "label": labels[e],
                "label_name": names[labels[e]],
                "event": e,
                "onset_s": round(o, 4),
                "split": split,
            }
            for o, e in zip(onsets, events, strict=True)
        ]
    notes: dict[str, Any] = {}
    unusual = {r: f for r, f in sfreqs.items() if f != RELEASE_SFREQ}
    if unusual:
        values = set(unusual.values())
        notes["original_sfreq"] = values.pop() if len(values) == 1 else unusual
    if past_end:
        notes["windows_past_end"] = past_end
    n_ch = len(proto.channels) if proto.channels is not None else len(RELEASE_CHANNELS)
    data = np.concatenate(windows) if windows else np.zeros((0, n_ch, proto.n_times), np.float32)
    return SubjectItems(arrays={"eeg": data}, rows=rows, notes=notes)


def check_edf_length(path: Path) -> None:
    """A :class:`DataError` if an EDF/BDF file is shorter than its header says (a truncated file).

    Written here because MNE only warns and reads the records that are there, so the lost windows would vanish.
    """
    with open(path, "rb") as fh:
        head = fh.read(256)
        try:
            header_bytes, n_records, ns = int(head[184:192]), int(head[236:244]), int(head[252:256])
            fh.seek(256 + ns * 216)  # per-signal fields; "samples per record" is the 9th (8 bytes each)
            field = fh.read(ns * 8)
            samples = [int(field[i * 8 : i * 8 + 8]) for i in range(ns)]
        except ValueError:
            raise DataError(path, "damaged EDF header: record or signal counts are not numbers") from None
    if n_records < 0:  # -1: unknown during recording; nothing to check against
        return
    width = 3 if head[:1] == b"\xff" else 2  # BDF stores 24-bit samples, EDF 16-bit
    record = sum(samples) * width
    expected, size = header_bytes + n_records * record, path.stat().st_size
    if size < expected:
        whole = (size - header_bytes) // record if record else 0
        raise DataError(
            path,
            f"truncated EDF file: the header promises {n_records} data records ({expected:,} bytes) but the file "
            f"holds {size:,} bytes ({max(whole, 0)} complete records); re-download it",
        )


def _read_run(path: Path) -> Any:
    """Read one EDF+ run with MNE, turning any failure into a :class:`DataError` naming the file."""
    import mne

    check_edf_length(path)
    try:
        raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    except Exception as err:  # MNE raises bare Exception for undecodable annotation bytes
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "annotation" in first.lower():
            problem = (
                "damaged EDF+ file: its annotation channel does not hold valid EDF+ annotations (the data "
                f"records are likely shifted or overwritten), so its events cannot be trusted ({first})"
            )
        else:
            problem = f"damaged or unreadable EDF file ({type(err).__name__}: {first})"
        raise DataError(path, problem) from None
    if raw.info["sfreq"] <= 0:
        raise DataError(path, f"invalid sampling rate {raw.info['sfreq']} Hz in the header")
    return raw


def _run_windows(
    path: Path, run: int, proto: PhysionetMIProtocol
) -> tuple[np.ndarray, list[float], list[str], float, list[tuple[float, str, str]]]:
    """Windows (µV, float32), their onsets and events, the file's rate, and cues whose window runs past the end."""
    import mne

    raw = _read_run(path)
    orig_sfreq = float(raw.info["sfreq"])
    beyond = _cues_beyond_end(path, raw.n_times / orig_sfreq, set(proto.labels_of_run(run)))
    descriptions = {str(d) for d in raw.annotations.description}
    wanted = set(proto.labels_of_run(run))
    if unexpected := sorted(descriptions - {"T0", "T1", "T2"}):
        raise DataError(path, f"unexpected annotations {unexpected}; EEGMMIDB runs hold only T0, T1 and T2")
    if missing := sorted({"T1", "T2"} - descriptions):
        raise DataError(
            path,
            f"no {' or '.join(missing)} annotations (found {sorted(descriptions) or 'none'}); run {run} "
            "must hold the task cues T1 and T2",
        )

    mne.datasets.eegbci.standardize(raw)
    keep = list(proto.channels) if proto.channels is not None else standard_channel_names()
    if absent := [c for c in standard_channel_names() if c not in raw.ch_names]:
        raise DataError(path, f"channels {absent} missing (after standardising names); found {raw.ch_names}")
    raw.pick(standard_channel_names())
    if proto.reference == "average":
        raw.set_eeg_reference("average", projection=False, verbose="error")
    raw.pick(keep).reorder_channels(keep)
    # A band edge or notch at or above the file's own Nyquist frequency has nothing to act on (a 128 Hz subject
    # holds no 60 Hz content), so it is left out rather than refused.
    try:
        if proto.l_freq is not None or proto.h_freq is not None:
            h_freq = proto.h_freq if proto.h_freq is None or proto.h_freq < orig_sfreq / 2 else None
            raw.filter(proto.l_freq, h_freq, verbose="error")
        if proto.notch is not None and proto.notch < orig_sfreq / 2:
            raw.notch_filter(proto.notch, verbose="error")
    except ValueError as err:
        raise DataError(path, f"cannot filter this recording ({err})") from None
    if orig_sfreq != proto.sfreq:
        raw.resample(proto.sfreq, verbose="error")

    events, ids = mne.events_from_annotations(
        raw, event_id={d: i for i, d in enumerate(("T0", "T1", "T2"), 1)}, verbose="error"
    )
    names = {v: k for k, v in ids.items()}
    data = raw.get_data(units="uV")
    start0 = round(proto.tmin * proto.sfreq)
    n_total = data.shape[1]
    out: list[np.ndarray] = []
    onsets: list[float] = []
    kinds: list[str] = []
    late: list[tuple[float, str, str]] = []
    for sample, _, code in events:
        event = names[code]
        if event not in wanted:
            continue
        onset = (sample - raw.first_samp) / proto.sfreq
        start = sample - raw.first_samp + start0
        if start < 0 or start + proto.n_times > n_total:
            late.append((round(float(onset), 4), event, "before start" if start < 0 else "past end"))
            continue
        out.append(data[:, start : start + proto.n_times])
        onsets.append(float(onset))
        kinds.append(event)
    x = np.stack(out).astype(np.float32) if out else np.zeros((0, len(keep), proto.n_times), np.float32)
    return x, onsets, kinds, orig_sfreq, late + beyond


def _cues_beyond_end(path: Path, duration: float, wanted: set[str]) -> list[tuple[float, str, str]]:
    """Cues whose onset lies at or after the end of the recording: MNE drops them when it reads the file, so
    they are read from the EDF+ annotations themselves (``mne.read_annotations``, which keeps them)."""
    import mne

    try:
        every = mne.read_annotations(path)
    except Exception:  # the file was read above; a reader that cannot list annotations adds nothing
        return []
    return [
        (round(float(o), 4), str(d), BEYOND)
        for o, d in zip(every.onset, every.description, strict=True)
        if str(d) in wanted and float(o) >= duration
    ]


#: ``where`` of a cue whose onset lies beyond the end of the recording (not truncated: the header agrees).
BEYOND = "beyond the recording"
