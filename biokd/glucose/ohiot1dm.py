"""OhioT1DM (2018 and 2020 releases): XML reader, a 5-minute model grid and BGLP-conforming windows.

Release and layout. One ``{id}-ws-training.xml`` and ``{id}-ws-testing.xml`` per person (test = the last
ten days), anywhere under the root: :func:`find_patients` globs recursively, so both the
``OhioT1DM/<year>/{train,test}/`` and the ``OhioT1DM-training/``, ``OhioT1DM-2-testing/`` layouts work.

Reading (:func:`read_patient_xml`). Every stream becomes a tidy ``pandas`` table whose columns are the
XML's attribute names; timestamps (``%d-%m-%Y %H:%M:%S``) become ``datetime64``, numeric attributes
floats. Bad input raises :class:`~biokd.errors.DataError` naming the file (and line, element, value):
malformed XML, a timestamp in another format, a file without glucose readings, an id that disagrees with
the file name. Events whose timestamp or main value is empty or non-numeric are skipped and counted;
exact duplicate events are dropped and counted; intervals whose end precedes their begin are swapped and
counted (some 2018 ``sleep`` rows). All counts are in ``PatientRecord.issues`` and the preprocessing
report.

Grid (:func:`build_grid`). Slots of 5 minutes, aligned to the clock, from the first to the last glucose
reading of a patient's files (training then testing; where they overlap, the later file wins and the
dropped earlier events are counted). Each slot holds:

- ``cgm_raw``: the reading in the slot (the last one if two fall in the same slot, counted); NaN if none.
  Targets are always ``cgm_raw``: never interpolated, never filled.
- ``cgm``: ``cgm_raw`` forward-filled from the past for at most ``max_fill_min``; beyond that the running
  mean of all earlier readings of the patient (so a long gap never pulls a value from the future).
- ``cgm_mask``: 1 where the slot has a real reading, 0 where ``cgm`` was filled.
- ``insulin``: units delivered in the slot. Basal: the scheduled rate (``basal``, U/h, in force from its
  ``ts`` until the next one) replaced inside temp basals (``temp_basal``, incl. suspensions at 0 U/h),
  integrated exactly over the slot. Overlapping temp basals: a new one cancels the running one (pumps run
  one at a time), so each ends at the next one's ``ts_begin`` (counted). Boluses: ``normal`` at
  ``ts_begin``; ``square`` spread evenly over ``ts_begin``–``ts_end``. Dual-wave boluses: the pump logs the
  two parts as separate events, ``normal dual`` (the immediate part) and ``square dual`` (the extended
  part), each with its own dose, so each is delivered by its own rule (``square dual`` spread, ``normal
  dual`` at once). Only when a ``normal dual`` event spans an interval (one event carrying a whole dual
  wave) is its dose split: ``dual_normal_fraction`` (default 0.5) at ``ts_begin``, the rest spread over the
  interval (counted as ``dual_split``).
- ``carbs``: grams of ``meal`` events in the slot.
- ``iob``, ``cob``: insulin and carbohydrates on board from the causal convolution of ``insulin`` and
  ``carbs`` with the curves of :func:`insulin_on_board_curve` and :func:`carbs_on_board_curve`.

Windows (:func:`make_windows`). Model input ``glucose_inputs``: float32 ``(6, history)`` with the
channels :data:`CHANNELS` = ``cgm`` (mg/dL), ``cgm_mask`` (0/1), ``insulin`` (U per 5 min), ``carbs``
(g per 5 min), ``iob`` (U), ``cob`` (g), oldest slot first; the last slot is the forecast origin.
Targets: ``cgm_raw`` ``horizons`` slots after the origin (default 6 and 12 = 30 and 60 min), in mg/dL.
Challenge rules: a training or validation window is made only if every target is a real reading of the
same part (train/val/test) as its origin; a test window is made if at least one of its targets is
scored, the others being NaN. Test targets in the first ``score_start_min`` (60) minutes of the test
file are not scored. Input history may reach back into the training file (it is the past).
Validation = the last ``val_fraction`` of each training file (by time).

On disk (:func:`preprocess_ohiot1dm`): the shared store (:mod:`biokd.data.store`); per patient the arrays
``glucose_inputs`` float32 ``(n, 6, history)`` and ``target`` float32 ``(n, n_horizons)`` (NaN = not scored), the
manifest rows (subject, release, split, origin, y_30, y_60) and the 5-minute grid ``shards/<id>.grid.csv``.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

import numpy as np
import pandas as pd

from .._io import sha256_file
from ..data.spec import DataSpec, InputSpec, TargetSpec
from ..data.store import SubjectItems, build_store
from ..errors import ConfigError, DataError

TIME_FORMAT = "%d-%m-%Y %H:%M:%S"
RELEASES: dict[str, tuple[str, ...]] = {
    "2018": ("559", "563", "570", "575", "588", "591"),
    "2020": ("540", "544", "552", "567", "584", "596"),
}
SIGNAL_KEY = "glucose_inputs"
CHANNELS = ("cgm", "cgm_mask", "insulin", "carbs", "iob", "cob")
#: Fixed per-channel normalisation models apply inside ``forward`` (so they take raw units and export as is):
#: (x − shift) / scale. CGM around 140 mg/dL in units of 50 mg/dL; carbs in 20 g; IOB in 5 U; COB in 30 g.
CHANNEL_SHIFT = (140.0, 0.0, 0.0, 0.0, 0.0, 0.0)
CHANNEL_SCALE = (50.0, 1.0, 1.0, 20.0, 5.0, 30.0)
STEP_MIN = 5
PARTS = ("training", "testing")
_TIME_LIKE = ("ts", "ts_begin", "ts_end", "tbegin", "tend")
_INTERVALS = (("ts_begin", "ts_end"), ("tbegin", "tend"))


@dataclass(frozen=True)
class StreamSpec:
    """Attributes of one stream: timestamps and values an event cannot lack, optional numeric ones."""

    times: tuple[str, ...]
    required: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()


_VALUE = StreamSpec(("ts",), ("value",))
STREAMS: dict[str, StreamSpec] = {
    "glucose_level": _VALUE,
    "finger_stick": _VALUE,
    "basal": _VALUE,
    "temp_basal": StreamSpec(("ts_begin", "ts_end"), ("value",)),
    "bolus": StreamSpec(("ts_begin", "ts_end"), ("dose",), ("bwz_carb_input",)),
    "meal": StreamSpec(("ts",), ("carbs",)),
    "sleep": StreamSpec(("ts_begin", "ts_end"), (), ("quality",)),
    "work": StreamSpec(("ts_begin", "ts_end"), (), ("intensity",)),
    "stressors": StreamSpec(("ts",)),
    "hypo_event": StreamSpec(("ts",)),
    "illness": StreamSpec(("ts_begin",)),
    "exercise": StreamSpec(("ts",), (), ("intensity", "duration")),
    "basis_heart_rate": _VALUE,
    "basis_gsr": _VALUE,
    "basis_skin_temperature": _VALUE,
    "basis_air_temperature": _VALUE,
    "basis_steps": _VALUE,
    "basis_sleep": StreamSpec(("tbegin", "tend"), (), ("quality",)),
    "acceleration": _VALUE,
}


# ----------------------------------------------------------------------------------------------------------
# Reading one XML file
# ----------------------------------------------------------------------------------------------------------


@dataclass
class PatientRecord:
    """One XML file: ``tables[stream]`` (XML attribute names as columns), ``meta`` and ``issues``."""

    patient_id: str
    path: Path
    part: str
    meta: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    issues: dict[str, dict[str, int]] = field(default_factory=dict)

    def table(self, stream: str) -> pd.DataFrame:
        """The table of ``stream``; an empty one with the schema's columns if the file lacks it."""
        if stream in self.tables:
            return self.tables[stream]
        spec = STREAMS.get(stream, StreamSpec(()))
        cols = [*spec.times, *spec.required, *spec.numeric]
        return pd.DataFrame({c: pd.Series(dtype="datetime64[ns]" if c in _TIME_LIKE else float) for c in cols})

    @property
    def n_skipped(self) -> int:
        return sum(n for counts in self.issues.values() for k, n in counts.items() if k.startswith("skipped"))


def _file_id_part(path: Path) -> tuple[str, str]:
    name = path.name
    for part in PARTS:
        suffix = f"-ws-{part}.xml"
        if name.endswith(suffix):
            return name[: -len(suffix)], part
    raise DataError(path, "not an OhioT1DM file: the name must end in -ws-training.xml or -ws-testing.xml")


def _parse_xml(path: Path) -> tuple[dict[str, str], dict[str, list[tuple[int, dict[str, str]]]]]:
    """Stream the file with expat (for line numbers): root attributes and ``stream -> [(line, attrs)]``."""
    parser = expat.ParserCreate()
    root: dict[str, str] = {}
    streams: dict[str, list[tuple[int, dict[str, str]]]] = {}
    stack: list[str] = []
    current: list[dict[str, str] | None] = [None]

    def start(tag: str, attrs: dict[str, str]) -> None:
        depth = len(stack)
        line = parser.CurrentLineNumber
        if depth == 0:
            if tag != "patient":
                raise DataError(path, f"line {line}: root element is <{tag}>, expected <patient>")
            root.update(attrs)
        elif depth == 1:
            streams.setdefault(tag, [])
        elif depth == 2:
            event = dict(attrs)
            streams[stack[1]].append((line, event))
            current[0] = event
        elif depth == 3 and current[0] is not None:
            # Nested items (the symptoms of a hypo_event): joined into one column named by their tag.
            text = " ".join(v for v in attrs.values() if v.strip())
            previous = current[0].get(tag)
            current[0][tag] = f"{previous}; {text}" if previous else text
        stack.append(tag)

    def end(_tag: str) -> None:
        stack.pop()
        if len(stack) == 2:
            current[0] = None

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        with open(path, "rb") as fh:
            parser.ParseFile(fh)
    except expat.ExpatError as err:
        raise DataError(
            path, f"malformed XML at line {err.lineno}, column {err.offset + 1}: {expat.ErrorString(err.code)}"
        ) from None
    return root, streams


def _blank(series: pd.Series) -> pd.Series:
    return series.isna() | (series.astype("string").str.strip() == "")


def _parse_times(path: Path, stream: str, col: str, raw: pd.Series, lines: np.ndarray) -> pd.Series:
    text = raw.astype("string").str.strip()
    parsed = pd.to_datetime(text, format=TIME_FORMAT, errors="coerce")
    bad = parsed.isna() & ~_blank(raw)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            path,
            f"line {lines[i]}: <{stream}> event {col}={raw.iloc[i]!r} is not a timestamp in the format "
            f"{TIME_FORMAT} ({int(bad.sum())} such value(s) in this stream)",
        )
    return parsed


def _stream_table(path: Path, stream: str, events: list[tuple[int, dict[str, str]]], counts: Counter) -> pd.DataFrame:
    spec = STREAMS.get(stream, StreamSpec(()))
    lines = np.array([line for line, _ in events], dtype=np.int64)
    df = pd.DataFrame.from_records([attrs for _, attrs in events])
    for col in (*spec.times, *spec.required, *spec.numeric):
        if col not in df:
            df[col] = pd.Series([None] * len(df), dtype=object)
    keep = np.ones(len(df), dtype=bool)
    for col in spec.times:
        empty = _blank(df[col]).to_numpy()
        if empty.any():
            counts[f"skipped: empty {col}"] += int((empty & keep).sum())
        keep &= ~empty
    for col in spec.required:
        empty = _blank(df[col]).to_numpy()
        number = pd.to_numeric(df[col].astype("string").str.strip(), errors="coerce")
        non_numeric = ~empty & number.isna().to_numpy()
        counts[f"skipped: empty {col}"] += int((empty & keep).sum())
        counts[f"skipped: non-numeric {col}"] += int((non_numeric & keep).sum())
        keep &= ~(empty | non_numeric)
    df, lines = df[keep].reset_index(drop=True), lines[keep]
    for col in df.columns:
        if col in _TIME_LIKE:
            df[col] = _parse_times(path, stream, col, df[col], lines)
        elif col in spec.required or col in spec.numeric:
            text = df[col].astype("string").str.strip()
            number = pd.to_numeric(text, errors="coerce")
            if col in spec.numeric:
                counts[f"blank {col} (kept as NaN)"] += int(_blank(df[col]).sum())
                counts[f"non-numeric {col} (kept as NaN)"] += int((number.isna() & ~_blank(df[col])).sum())
            df[col] = number.astype(float)
    for begin, end in _INTERVALS:
        if begin in df and end in df:
            swap = (df[end] < df[begin]).to_numpy()
            if swap.any():
                counts[f"swapped: {end} before {begin}"] += int(swap.sum())
                b = df.loc[swap, begin].copy()
                df.loc[swap, begin] = df.loc[swap, end]
                df.loc[swap, end] = b
    dup = df.duplicated().to_numpy()
    if dup.any():
        counts["dropped: exact duplicate"] += int(dup.sum())
        df = df[~dup]
    order = spec.times[0] if spec.times else next((c for c in _TIME_LIKE if c in df), None)
    if order is not None:
        df = df.sort_values(order, kind="stable")
    return df.reset_index(drop=True)


def read_patient_xml(path: str | Path) -> PatientRecord:
    """Read one ``{id}-ws-{training,testing}.xml`` into tables (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    file_id, part = _file_id_part(path)
    root, streams = _parse_xml(path)
    if root.get("id", file_id).strip() != file_id:
        raise DataError(path, f"<patient id={root.get('id')!r}> disagrees with the file name (id {file_id})")
    tables: dict[str, pd.DataFrame] = {}
    issues: dict[str, dict[str, int]] = {}
    for stream, events in streams.items():
        counts: Counter = Counter()
        tables[stream] = _stream_table(path, stream, events, counts)
        if any(counts.values()):
            issues[stream] = {k: v for k, v in sorted(counts.items()) if v}
    if "glucose_level" not in tables or tables["glucose_level"].empty:
        raise DataError(path, "no glucose_level readings: the file has no CGM stream (or only empty readings)")
    meta = {
        "id": file_id,
        "part": part,
        "release": next((r for r, ids in RELEASES.items() if file_id in ids), "other"),
        "weight": root.get("weight"),
        "insulin_type": root.get("insulin_type"),
        "file": str(path),
        "unknown_streams": sorted(s for s in streams if s not in STREAMS),
    }
    return PatientRecord(file_id, path, part, meta, tables, issues)


# ----------------------------------------------------------------------------------------------------------
# Finding files
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientFiles:
    patient_id: str
    training: Path
    testing: Path | None

    @property
    def paths(self) -> list[Path]:
        return [self.training] if self.testing is None else [self.training, self.testing]


def find_patients(root: str | Path, patients: Iterable[str] | None = None) -> dict[str, PatientFiles]:
    """``id -> PatientFiles`` for every ``*-ws-{training,testing}.xml`` under ``root`` (recursively).

    A testing file without its training file, or two different files of the same name, is a
    :class:`DataError`; identical copies (both layouts unpacked) are read once.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "not a folder")
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(p for part in PARTS for p in root.rglob(f"*-ws-{part}.xml")):
        key = _file_id_part(path)
        if key in found and sha256_file(found[key]) != sha256_file(path):
            raise DataError(path, f"a different file of the same name is also at {found[key]}")
        found.setdefault(key, path)
    if not found:
        raise DataError(root, "no *-ws-training.xml or *-ws-testing.xml files under this folder")
    ids = sorted({i for i, _ in found})
    if patients is not None:
        wanted = [str(p) for p in patients]
        missing = [p for p in wanted if p not in ids]
        if missing:
            raise DataError(root, f"no files for patient(s) {missing}; found {ids}")
        ids = [i for i in ids if i in wanted]
    out = {}
    for pid in ids:
        training, testing = found.get((pid, "training")), found.get((pid, "testing"))
        if training is None:
            raise DataError(testing, f"test file of patient {pid} has no matching {pid}-ws-training.xml")
        out[pid] = PatientFiles(pid, training, testing)
    return out


# ----------------------------------------------------------------------------------------------------------
# Insulin and carbohydrate curves
# ----------------------------------------------------------------------------------------------------------


def insulin_on_board_curve(t_min: np.ndarray, duration: float = 360.0, peak: float = 75.0) -> np.ndarray:
    """Fraction of a dose still on board ``t_min`` after it: the exponential insulin model.

    Model: Maksimovic's exponential activity curve as used by Loop and OpenAPS oref0 (activity
    ∝ (1 − t/td)·exp(−t/τ)); written here from its closed form. With td = ``duration``, tp = ``peak``:
    τ = tp(1 − tp/td)/(1 − 2tp/td), a = 2τ/td, S = 1/(1 − a + (1 + a)e^(−td/τ)) and
    IOB(t) = 1 − S(1 − a)[(t²/(τ·td(1 − a)) − t/τ − 1)e^(−t/τ) + 1] for 0 ≤ t ≤ td, 0 after; IOB(0) = 1,
    IOB(td) = 0.
    """
    t = np.asarray(t_min, dtype=float)
    tau = peak * (1 - peak / duration) / (1 - 2 * peak / duration)
    a = 2 * tau / duration
    s = 1 / (1 - a + (1 + a) * math.exp(-duration / tau))
    tc = np.clip(t, 0, duration)
    iob = 1 - s * (1 - a) * ((tc**2 / (tau * duration * (1 - a)) - tc / tau - 1) * np.exp(-tc / tau) + 1)
    return np.where(t >= duration, 0.0, np.clip(iob, 0.0, 1.0))


def carbs_on_board_curve(t_min: np.ndarray, peak: float = 40.0, duration: float = 360.0) -> np.ndarray:
    """Fraction of a meal's carbohydrates not yet absorbed ``t_min`` after it.

    Model: the gut absorption of Hovorka et al. 2004 (Physiol. Meas. 25:905), rate of appearance
    ∝ t·e^(−t/tmax); its integral leaves (1 + t/tmax)·e^(−t/tmax) on board (tmax = ``peak``), cut to 0
    after ``duration``.
    """
    t = np.asarray(t_min, dtype=float)
    cob = (1 + t / peak) * np.exp(-t / peak)
    return np.where((t < 0) | (t >= duration), 0.0, cob)


# ----------------------------------------------------------------------------------------------------------
# The 5-minute grid
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridConfig:
    step_min: int = STEP_MIN
    max_fill_min: int = 30
    iob_duration_min: float = 360.0
    iob_peak_min: float = 75.0
    cob_peak_min: float = 40.0
    cob_duration_min: float = 360.0
    dual_normal_fraction: float = 0.5
    #: Plausible ranges (inclusive); values outside, and non-finite ones, are excluded and counted per stream.
    #: CGM and finger sticks: sensors and meters read about 20-600 mg/dL; basal rates: pumps allow 0-35 U/h;
    #: a bolus 0-75 U; a meal 0-500 g of carbohydrate.
    glucose_range: tuple[float, float] = (20.0, 600.0)
    basal_range: tuple[float, float] = (0.0, 35.0)
    bolus_range: tuple[float, float] = (0.0, 75.0)
    carbs_range: tuple[float, float] = (0.0, 500.0)
    #: Readings of one file more than this many days from the file's main run of readings are time outliers
    #: (a mistyped date): excluded with the events around them and counted, so the grid never spans them.
    max_gap_days: float = 7.0


@dataclass
class Grid:
    """A patient's 5-minute grid (``frame`` indexed by slot start) and what building it counted."""

    patient_id: str
    frame: pd.DataFrame
    notes: dict[str, Any]
    test_start: pd.Timestamp | None = None


def _minutes(times: pd.Series | pd.DatetimeIndex, origin: pd.Timestamp) -> np.ndarray:
    return np.asarray((pd.DatetimeIndex(times) - origin) / pd.Timedelta(minutes=1), dtype=float)


def _integrate_steps(knots: np.ndarray, rates: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Integral over each ``[edges[k], edges[k+1])`` of the step function ``rates[j]`` on ``[knots[j], …)``.

    The function is 0 before ``knots[0]``; its integral is piecewise linear, so the result is exact.
    """
    if len(knots) == 0:
        return np.zeros(len(edges) - 1)
    cum = np.concatenate([[0.0], np.cumsum(rates[:-1] * np.diff(knots))])
    idx = np.searchsorted(knots, edges, side="right") - 1
    safe = np.clip(idx, 0, None)
    total = np.where(idx >= 0, cum[safe] + rates[safe] * (edges - knots[safe]), 0.0)
    return np.diff(total)


def _basal_units(basal: pd.DataFrame, temp: pd.DataFrame, origin: pd.Timestamp, edges: np.ndarray, notes):
    """Units of basal insulin per slot: scheduled rates with temp basals (incl. 0 = suspended) on top."""
    b_t = _minutes(basal["ts"], origin)
    b_r = basal["value"].to_numpy(float) / 60.0  # U/h -> U/min
    t_begin = _minutes(temp["ts_begin"], origin)
    t_end = _minutes(temp["ts_end"], origin)
    t_r = temp["value"].to_numpy(float) / 60.0
    if len(t_begin) > 1:
        # A new temp basal cancels the running one: each ends at the next one's start at the latest.
        overlap = t_end[:-1] > t_begin[1:]
        notes["temp_basal_overlaps_truncated"] = int(overlap.sum())
        t_end = np.concatenate([np.minimum(t_end[:-1], t_begin[1:]), t_end[-1:]])
    notes["temp_basal_suspensions"] = int((t_r == 0).sum())
    breaks = np.unique(np.concatenate([b_t, t_begin, t_end]))
    if len(breaks) == 0:
        notes["no_basal_data"] = True
        return np.zeros(len(edges) - 1)
    sched_idx = np.searchsorted(b_t, breaks, side="right") - 1
    rate = np.where(sched_idx >= 0, b_r[np.clip(sched_idx, 0, None)] if len(b_r) else 0.0, 0.0)
    if len(t_begin):
        j = np.searchsorted(t_begin, breaks, side="right") - 1
        jj = np.clip(j, 0, None)
        in_temp = (j >= 0) & (breaks < t_end[jj])
        rate = np.where(in_temp, t_r[jj], rate)
    if len(b_t) and edges[0] < b_t[0]:
        notes["minutes_before_first_basal"] = float(min(b_t[0], edges[-1]) - edges[0])
    return _integrate_steps(breaks, rate, edges)


def _bolus_units(bolus: pd.DataFrame, origin: pd.Timestamp, edges: np.ndarray, cfg: GridConfig, notes):
    n = len(edges) - 1
    units = np.zeros(n)
    begin = _minutes(bolus["ts_begin"], origin)
    end = _minutes(bolus["ts_end"], origin)
    dose = bolus["dose"].to_numpy(float)
    kinds = bolus["type"].astype("string").str.strip().str.lower().fillna("") if "type" in bolus else None
    kinds = kinds.to_numpy(str) if kinds is not None else np.full(len(bolus), "normal")
    now = np.zeros(len(bolus))
    spread = np.zeros(len(bolus))
    counts: Counter = Counter()
    for i, kind in enumerate(kinds):
        has_span = end[i] > begin[i]
        if kind in ("square", "square dual"):
            (spread if has_span else now)[i] = dose[i]
            counts[f"{kind} without duration (given at once)"] += int(not has_span)
        elif kind == "normal dual" and has_span:
            now[i] = cfg.dual_normal_fraction * dose[i]
            spread[i] = dose[i] - now[i]
            counts["dual_split"] += 1
        else:
            if kind not in ("normal", "normal dual"):
                counts[f"unknown type {kind!r} (by duration)"] += 1
                if has_span:
                    spread[i] = dose[i]
                    continue
            now[i] = dose[i]
    slot = np.floor((begin - edges[0]) / cfg.step_min).astype(int)
    inside = (slot >= 0) & (slot < n)
    np.add.at(units, slot[inside & (now > 0)], now[inside & (now > 0)])
    counts["outside grid"] += int((~inside & (now > 0)).sum())
    for i in np.flatnonzero(spread > 0):
        counts["square part outside grid"] += int(begin[i] < edges[0] or end[i] > edges[-1])
        frac = np.clip((edges - begin[i]) / (end[i] - begin[i]), 0.0, 1.0)
        units += spread[i] * np.diff(frac)
    notes["bolus"] = {k: v for k, v in counts.items() if v}
    return units


_RANGES = {"glucose_level": ("value", "glucose_range"), "finger_stick": ("value", "glucose_range"),
           "basal": ("value", "basal_range"), "temp_basal": ("value", "basal_range"),
           "bolus": ("dose", "bolus_range"), "meal": ("carbs", "carbs_range")}  # fmt: skip


def _plausible(rec: PatientRecord, cfg: GridConfig, notes: dict[str, Any]) -> PatientRecord:
    """``rec`` without out-of-range or non-finite values (counted in ``notes["out_of_range"]``)."""
    tables = dict(rec.tables)
    for stream, (col, name) in _RANGES.items():
        df = rec.table(stream)
        lo, hi = getattr(cfg, name)
        values = df[col].to_numpy(float)
        bad = ~(np.isfinite(values) & (values >= lo) & (values <= hi))
        if bad.any():
            counts = notes.setdefault("out_of_range", {}).setdefault(f"{rec.part} {stream}", {})
            counts[f"{col} outside [{lo:g}, {hi:g}]"] = int(bad.sum())
            tables[stream] = df[~bad].reset_index(drop=True)
    return dataclasses.replace(rec, tables=tables)


def _main_run(rec: PatientRecord, cfg: GridConfig, notes: dict[str, Any]) -> PatientRecord:
    """``rec`` restricted to its main run of glucose readings: time outliers are excluded and counted."""
    ts = rec.table("glucose_level")["ts"].sort_values().to_numpy()
    gap = np.timedelta64(int(cfg.max_gap_days * 86400), "s")
    breaks = np.flatnonzero(np.diff(ts) > gap)
    if not len(breaks):
        return rec
    bounds = np.concatenate([[0], breaks + 1, [len(ts)]])
    k = int(np.argmax(np.diff(bounds)))  # the run holding the most readings
    lo, hi = ts[bounds[k]] - gap, ts[bounds[k + 1] - 1] + gap
    tables = dict(rec.tables)
    counts: dict[str, int] = {}
    for stream, df in rec.tables.items():
        times = [c for c in STREAMS.get(stream, StreamSpec(())).times if c in df]
        if not times or df.empty:
            continue
        t = df[times[0]].to_numpy()
        out = ~((t >= lo) & (t <= hi))
        if out.any():
            counts[stream] = int(out.sum())
            tables[stream] = df[~out].reset_index(drop=True)
    notes.setdefault("time_outliers", {})[rec.part] = {
        "kept": [str(pd.Timestamp(lo + gap)), str(pd.Timestamp(hi - gap))],
        "excluded_events": counts,
    }
    return dataclasses.replace(rec, tables=tables)


def _check_order(records: Sequence[PatientRecord]) -> None:
    """A testing file must follow its training file (the test is the last days)."""
    first = {r.part: r.table("glucose_level")["ts"].min() for r in records}
    if "training" in first and "testing" in first and first["testing"] < first["training"]:
        testing = next(r for r in records if r.part == "testing")
        raise DataError(
            testing.path,
            f"the testing file begins ({first['testing']}) before its training file ({first['training']}); "
            "the test must be the last days of the recording (swapped files or a mistyped date?)",
        )


def _merge_records(records: Sequence[PatientRecord], notes: dict) -> tuple[dict[str, pd.DataFrame], list]:
    """Concatenate streams of consecutive files; where a file overlaps the next, the next one wins."""
    records = sorted(records, key=lambda r: r.table("glucose_level")["ts"].min())
    starts = [r.table("glucose_level")["ts"].min() for r in records]
    merged: dict[str, list[pd.DataFrame]] = {}
    dropped: Counter = Counter()
    for i, rec in enumerate(records):
        limit = starts[i + 1].floor(f"{STEP_MIN}min") if i + 1 < len(records) else None
        for stream in ("glucose_level", "basal", "temp_basal", "bolus", "meal"):
            df = rec.table(stream)
            tcol = STREAMS[stream].times[0]
            if limit is not None and len(df):
                late = (df[tcol] >= limit).to_numpy()
                if late.any():
                    dropped[f"{stream} of {rec.part} after {records[i + 1].part} begins"] += int(late.sum())
                    df = df[~late]
            merged.setdefault(stream, []).append(df)
    tables = {}
    for stream, frames in merged.items():
        frames = [f for f in frames if len(f)]
        df = pd.concat(frames, ignore_index=True) if frames else records[0].table(stream)
        dup = df.duplicated().to_numpy()
        if dup.any():
            dropped[f"{stream} duplicated across files"] += int(dup.sum())
            df = df[~dup]
        tables[stream] = df.sort_values(STREAMS[stream].times[0], kind="stable").reset_index(drop=True)
    if dropped:
        notes["overlap"] = dict(dropped)
    return tables, [(r.part, s) for r, s in zip(records, starts, strict=True)]


def build_grid(records: PatientRecord | Sequence[PatientRecord], config: GridConfig | None = None) -> Grid:
    """The 5-minute model grid of one patient's files (see the module docstring for every column)."""
    cfg = config or GridConfig()
    records = [records] if isinstance(records, PatientRecord) else list(records)
    if not records or len({r.patient_id for r in records}) != 1:
        raise ValueError("build_grid needs one or more files of the same patient")
    notes: dict[str, Any] = {}
    records = [_main_run(_plausible(r, cfg, notes), cfg, notes) for r in records]
    for rec in records:
        if rec.table("glucose_level").empty:
            raise DataError(rec.path, "no glucose_level reading within the plausible range (see glucose_range)")
    _check_order(records)
    tables, starts = _merge_records(records, notes)
    step = pd.Timedelta(minutes=cfg.step_min)
    glucose = tables["glucose_level"]
    origin = glucose["ts"].min().floor(step)
    n = int((glucose["ts"].max() - origin) // step) + 1
    times = pd.date_range(origin, periods=n, freq=step)
    edges = np.arange(n + 1, dtype=float) * cfg.step_min

    slot = ((glucose["ts"] - origin) // step).to_numpy(int)
    readings = pd.Series(glucose["value"].to_numpy(float), index=slot)
    last = ~readings.index.duplicated(keep="last")  # two readings in one slot: the later one is kept
    cgm_raw = np.full(n, np.nan)
    cgm_raw[readings.index[last]] = readings.to_numpy()[last]
    notes["cgm_readings"] = len(glucose)
    notes["cgm_same_slot_overwritten"] = int((~last).sum())
    raw = pd.Series(cgm_raw)
    limit = cfg.max_fill_min // cfg.step_min
    cgm = raw.ffill(limit=limit) if limit > 0 else raw.copy()
    running_mean = raw.expanding(min_periods=1).mean()
    long_gap = cgm.isna()
    cgm = cgm.fillna(running_mean)
    notes["cgm_slots_missing"] = int(raw.isna().sum())
    notes["cgm_slots_forward_filled"] = int((raw.isna() & ~long_gap).sum())
    notes["cgm_slots_running_mean"] = int(long_gap.sum())

    basal = _basal_units(tables["basal"], tables["temp_basal"], origin, edges, notes)
    bolus = _bolus_units(tables["bolus"], origin, edges, cfg, notes)
    carbs = np.zeros(n)
    meal = tables["meal"]
    m_slot = ((meal["ts"] - origin) // step).to_numpy(int)
    inside = (m_slot >= 0) & (m_slot < n)
    np.add.at(carbs, m_slot[inside], meal["carbs"].to_numpy(float)[inside])
    if (~inside).any():
        notes["meals_outside_grid"] = int((~inside).sum())
    insulin = basal + bolus
    lags = np.arange(0, max(cfg.iob_duration_min, cfg.cob_duration_min) + cfg.step_min, cfg.step_min)
    iob_k = insulin_on_board_curve(lags, cfg.iob_duration_min, cfg.iob_peak_min)
    cob_k = carbs_on_board_curve(lags, cfg.cob_peak_min, cfg.cob_duration_min)
    iob = np.convolve(insulin, iob_k)[:n]  # causal: slot k sees slots <= k only
    cob = np.convolve(carbs, cob_k)[:n]

    part = np.full(n, starts[0][0], dtype=object)
    test_start = None
    for name, start in starts[1:]:
        first = int((start.floor(step) - origin) // step)
        part[first:] = name
        if name == "testing":
            test_start = start.floor(step)
    frame = pd.DataFrame(
        {
            "part": part,
            "cgm_raw": cgm_raw,
            "cgm": cgm.to_numpy(),
            "cgm_mask": (~raw.isna()).to_numpy(float),
            "basal": basal,
            "bolus": bolus,
            "insulin": insulin,
            "carbs": carbs,
            "iob": iob,
            "cob": cob,
        },
        index=pd.DatetimeIndex(times, name="time"),
    )
    return Grid(records[0].patient_id, frame, notes, test_start)


# ----------------------------------------------------------------------------------------------------------
# Windows
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Windows:
    """Windows of one patient: inputs ``(n, C, history)``, targets ``(n, H)`` (NaN = not scored)."""

    inputs: np.ndarray
    target: np.ndarray
    origin: np.ndarray
    split: np.ndarray
    notes: dict[str, Any]


def _split_labels(frame: pd.DataFrame, val_fraction: float) -> np.ndarray:
    part = frame["part"].to_numpy(object)
    split = np.where(part == "testing", "test", "train").astype(object)
    train = np.flatnonzero(split == "train")
    if val_fraction > 0 and len(train):
        cut = train[0] + round((1 - val_fraction) * len(train))
        split[cut : train[-1] + 1] = "val"
    return split


def make_windows(
    grid: Grid,
    history: int = 36,
    horizons: Sequence[int] = (6, 12),
    *,
    score_start_min: int = 60,
    val_fraction: float = 0.2,
    channels: Sequence[str] = CHANNELS,
) -> Windows:
    """Windows with ``history`` slots of ``channels`` ending at each origin, targets ``horizons`` ahead."""
    if not horizons or any(int(h) < 1 for h in horizons):
        raise ConfigError(f"horizons must be positive step counts (the target follows the input); got {list(horizons)}")
    if history < 1:
        raise ConfigError(f"history must be at least 1 step; got {history}")
    frame = grid.frame
    n, horizons = len(frame), tuple(int(h) for h in horizons)
    split = _split_labels(frame, val_fraction)
    cgm_raw = frame["cgm_raw"].to_numpy(float)
    times = frame.index
    origins = np.arange(history - 1, n)
    targets = np.full((len(origins), len(horizons)), np.nan)
    valid = np.zeros((len(origins), len(horizons)), dtype=bool)
    score_from = None if grid.test_start is None else grid.test_start + pd.Timedelta(minutes=score_start_min)
    for k, h in enumerate(horizons):
        j = origins + h
        ok = j < n
        jj = np.where(ok, j, 0)
        ok &= np.isfinite(cgm_raw[jj]) & (split[jj] == split[origins])
        if score_from is not None:
            ok &= ~((split[origins] == "test") & (times[jj] < score_from))
        valid[:, k] = ok
        targets[ok, k] = cgm_raw[jj[ok]]
    is_test = split[origins] == "test"
    keep = np.where(is_test, valid.any(axis=1), valid.all(axis=1))
    values = frame[list(channels)].to_numpy(np.float32)
    view = np.lib.stride_tricks.sliding_window_view(values, history, axis=0)  # (n - T + 1, C, T)
    idx = origins[keep]
    notes = {
        "windows": {s: int((split[idx] == s).sum()) for s in ("train", "val", "test")},
        "test_scored": {f"{h * STEP_MIN}min": int((valid[:, k] & is_test).sum()) for k, h in enumerate(horizons)},
        "origins_without_full_history": int(min(history - 1, n)),
        "train_val_origins_without_all_targets": int((~is_test & ~valid.all(axis=1)).sum()),
        "test_origins_without_scored_target": int((is_test & ~valid.any(axis=1)).sum()),
    }
    return Windows(
        inputs=np.ascontiguousarray(view[idx - (history - 1)], dtype=np.float32),
        target=targets[keep].astype(np.float32),
        origin=times[idx].to_numpy(),
        split=split[idx].astype(str),
        notes=notes,
    )


# ----------------------------------------------------------------------------------------------------------
# Preprocessing a release into windows on disk
# ----------------------------------------------------------------------------------------------------------


@dataclass
class OhioProtocol:
    """Windows and rules of an OhioT1DM build (what ``protocol.json`` holds and the shard hash covers)."""

    history: int = 36
    horizons: tuple[int, ...] = (6, 12)
    score_start_min: int = 60
    val_fraction: float = 0.2
    grid: GridConfig = field(default_factory=GridConfig)

    def __post_init__(self) -> None:
        from ..errors import ConfigError

        if isinstance(self.grid, Mapping):
            self.grid = GridConfig(**self.grid)
        self.horizons = tuple(int(h) for h in self.horizons)
        if self.history < 2:
            raise ConfigError(f"history must be at least 2 steps; got {self.history}")
        if not self.horizons or any(h <= 0 for h in self.horizons):
            raise ConfigError(
                f"horizons must be positive step counts (the target lies after the input); got {list(self.horizons)}"
            )
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1); got {self.val_fraction}")

    def to_protocol(self) -> dict[str, Any]:
        return {
            "dataset": "ohiot1dm",
            "channels": list(CHANNELS),
            "channel_units": list(CHANNEL_UNITS),
            "channel_shift": list(CHANNEL_SHIFT),
            "channel_scale": list(CHANNEL_SCALE),
            "step_min": STEP_MIN,
            "history": int(self.history),
            "horizons": list(self.horizons),
            "horizon_min": [h * STEP_MIN for h in self.horizons],
            "score_start_min": int(self.score_start_min),
            "val_fraction": float(self.val_fraction),
            "targets": "real CGM readings only (never interpolated); NaN in test = not scored",
            "grid": asdict(self.grid),
            "format": 2,
        }

    @classmethod
    def from_protocol(cls, protocol: Mapping[str, Any]) -> OhioProtocol:
        keys = ("history", "horizons", "score_start_min", "val_fraction", "grid")
        return cls(**{k: protocol[k] for k in keys if k in protocol})

    def spec(self) -> DataSpec:
        """``glucose_inputs`` ``(channel, time)`` in raw units on a 5-minute grid; forecasts in mg/dL."""
        inputs = InputSpec(
            SIGNAL_KEY,
            [len(CHANNELS), self.history],
            ["channel", "time"],
            unit="per channel (see channel_units)",
            sfreq=1 / (60 * STEP_MIN),
            labels={"channel": list(CHANNELS)},
        )
        target = TargetSpec(
            "forecasting",
            key="target",
            horizons=[float(h * STEP_MIN) for h in self.horizons],
            horizon_unit="min",
            unit="mg/dL",
            metrics="glucose",
        )
        return DataSpec("ohiot1dm", [inputs], target, ["subject", "session", "release", "origin"])


def input_sizes(spec: DataSpec) -> dict[str, Any]:
    """Sizes a glucose model takes from a data spec: input channels and history, and the horizons."""
    x = spec.input(SIGNAL_KEY)
    return {"n_chans": x.size("channel"), "n_times": x.size("time"), "n_outputs": spec.target.n_outputs}


CHANNEL_UNITS = ("mg/dL", "1", "U per 5 min", "g per 5 min", "U", "g")


def _issues(records: Sequence[PatientRecord]) -> dict[str, Any]:
    return {r.part: r.issues for r in records if r.issues}


def process_patient(paths: Sequence[Path], protocol: OhioProtocol) -> tuple[Windows, Grid, dict]:
    """Read a patient's files, build the grid and the windows of ``protocol``."""
    records = [read_patient_xml(p) for p in paths]
    grid = build_grid(records, protocol.grid)
    windows = make_windows(
        grid,
        protocol.history,
        protocol.horizons,
        score_start_min=protocol.score_start_min,
        val_fraction=protocol.val_fraction,
    )
    notes = {
        "release": records[0].meta["release"],
        "files": [str(p) for p in paths],
        "issues": _issues(records),
        "events_skipped": sum(r.n_skipped for r in records),
        "grid": grid.notes,
        **windows.notes,
    }
    return windows, grid, notes


def process_subject(subject: str, paths: Sequence[Path], protocol: Mapping[str, Any]) -> SubjectItems:
    """The store's per-subject step: windows, targets, manifest rows and the grid (kept for plots)."""
    windows, grid, notes = process_patient(paths, OhioProtocol.from_protocol(protocol))
    rows = pd.DataFrame(
        {
            "subject": subject,
            "session": windows.split,
            "release": notes["release"],
            "split": windows.split,
            "origin": pd.DatetimeIndex(windows.origin).strftime("%Y-%m-%d %H:%M:%S"),
            "last_cgm": windows.inputs[:, 0, -1],
        }
    )
    for k, h in enumerate(protocol["horizons"]):
        rows[f"y_{h * STEP_MIN}"] = windows.target[:, k]
    return SubjectItems(
        arrays={SIGNAL_KEY: windows.inputs, "target": windows.target},
        rows=rows.to_dict("records"),
        notes=notes,
        tables={"grid": grid.frame},
    )


def preprocess_ohiot1dm(
    root: str | Path,
    out: str | Path,
    protocol: OhioProtocol | None = None,
    *,
    patients: Iterable[str] | None = None,
    skip_bad: bool = False,
    jobs: int = 1,
    progress: bool = False,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Turn the XML files under ``root`` into windows in the store at ``out`` (layout: :mod:`biokd.data.store`).

    A patient whose windows were built before with the same protocol from the same files is reused.
    A :class:`DataError` aborts unless ``skip_bad``: then the patient is skipped and listed in the report.
    Returns the report (also written to ``out/report.json``), with per-patient notes.
    """
    protocol = protocol or OhioProtocol()
    found = find_patients(root, patients)
    report = build_store(
        out,
        {pid: files.paths for pid, files in found.items()},
        process_subject,
        protocol.to_protocol(),
        protocol.spec(),
        jobs=jobs,
        skip_bad=skip_bad,
        progress=progress,
        scheduler=scheduler,
    ).to_dict()
    report["root"] = str(root)
    report["patients"] = report["notes"]
    report["n_skipped_patients"] = report["n_skipped"]
    report["events_skipped"] = sum(n.get("events_skipped", 0) for n in report["patients"].values())
    return report


def grid_of(root: str | Path, subject: str) -> pd.DataFrame:
    """The 5-minute grid of one patient of a preprocessed folder (for plots of forecasts with meals and insulin)."""
    return pd.read_csv(Path(root) / "shards" / f"{subject}.grid.csv", index_col=0, parse_dates=True)
