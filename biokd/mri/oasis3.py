"""OASIS-3 → per-visit T1w MRI (and amyloid PET SUVR where present) labelled by amyloid status.

Reads both layouts of the release (the download scripts' ``OAS30001_MR_d0129/anat1/*_T1w.nii.gz`` and BIDS
``sub-OAS30001/ses-d0129/anat/*_T1w.nii.gz``), PUP SUVR maps (``…/pet_proc/OAS30001_AV45_d2430n_msum_SUVR.nii``),
and the tables ``OASIS3_amyloid_centiloid.csv`` (required), ``OASIS3_PUP.csv`` and ``OASIS3_UDSb4_cdr.csv``
(optional), each joined on its own session key. Each MR session is paired with the same subject's amyloid PET
session nearest in days within ``±max_days``; its Centiloid value against the tracer's threshold gives the
label. Volumes go through MONAI transforms. See ``datasets/oasis3.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._io import write_json
from ..config import from_known_keys
from ..data.spec import DataSpec
from ..data.store import BuildReport, SubjectItems, build_store
from ..errors import ConfigError, DataError
from ..splits import check_no_leakage

DATASET = "oasis3"
CLASS_NAMES = ("amyloid_negative", "amyloid_positive")
PROCESSING_VERSION = 1

CENTILOID_TABLE = "OASIS3_amyloid_centiloid.csv"
PUP_TABLE = "OASIS3_PUP.csv"
CLINICAL_TABLE = "OASIS3_UDSb4_cdr.csv"
TABLES = (CENTILOID_TABLE, PUP_TABLE, CLINICAL_TABLE)

#: Amyloid-positive when Centiloid > threshold. PIB 16.4 and AV45 20.6 CL: third-party OASIS-3 analysis code
#: (unconfirmed against a primary source); Chiumento et al. (arXiv 2604.12574, training code) use 20.6 for both.
DEFAULT_THRESHOLDS = {"PIB": 16.4, "AV45": 20.6}
CHIUMENTO_THRESHOLDS = {"PIB": 20.6, "AV45": 20.6}

_SUBJECT = re.compile(r"^OAS3\d{4}$")
_MR_SESSION = re.compile(r"^(OAS3\d{4})_MR_d(\d+)$")
_BIDS_SUBJECT = re.compile(r"^sub-(OAS3\d{4})$")
_BIDS_SESSION = re.compile(r"^ses-d(\d+)$")
_PET_SESSION = re.compile(r"^(OAS3\d{4})_([A-Za-z0-9]+?)_d(\d+)$")  # OAS30001_AV45_d2430
_PUP_SESSION = re.compile(r"^(OAS3\d{4})_([A-Za-z0-9]+)_PUPTIMECOURSE_d(\d+)$")
_CLINICAL_SESSION = re.compile(r"^(OAS3\d{4})_UDSb4_d(\d+)$")
_SUVR_FILE = re.compile(r"^(OAS3\d{4})_([A-Za-z0-9]+)_d(\d+)\w*_SUVR\.nii(\.gz)?$")


@dataclass(frozen=True)
class Oasis3Protocol:
    """Every setting of the OASIS-3 preprocessing."""

    #: MR and PET sessions are paired when at most this many days apart (Chiumento et al.: 365)
    max_days: int = 365
    #: Centiloid threshold per tracer; a visit is amyloid-positive when Centiloid > threshold
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    #: Centiloid column of OASIS3_amyloid_centiloid.csv (rsf = partial-volume corrected)
    centiloid_column: str = "Centiloid_fSUVR_rsf_TOT_CORTMEAN"
    #: SUVR column of OASIS3_PUP.csv copied to the manifest
    suvr_column: str = "PET_fSUVR_rsf_TOT_CORTMEAN"
    #: BIDS suffix of the structural scan used (T1w; T2w or FLAIR also exist in OASIS-3)
    mri_suffix: str = "T1w"
    #: "require" (default): visits without a PET SUVR volume are skipped (counted), so a teacher that reads PET
    #: never trains or is scored on an all-zero ``pet``; "optional": such visits keep an all-zero ``pet`` array
    #: and ``has_pet=False`` (an MRI-only store for students); "off": no ``pet`` array at all
    pet: Literal["optional", "require", "off"] = "require"
    #: voxel size (mm) after resampling, and the fixed array size (crop or pad) after it
    pixdim: tuple[float, float, float] = (2.0, 2.0, 2.0)
    spatial_size: tuple[int, int, int] = (96, 112, 96)
    #: folder holding the three tables; None: found anywhere under the root by their names
    tables_dir: str | None = None
    #: folds of StratifiedGroupKFold (by subject, stratified by label) and its seed
    n_folds: int = 5
    seed: int = 0
    #: the fold whose subjects test, and the one whose subjects validate (None: the fold after ``test_fold``)
    test_fold: int = 0
    val_fold: int | None = None

    def __post_init__(self) -> None:
        if self.max_days < 0:
            raise ConfigError(f"max_days must be >= 0; got {self.max_days}")
        if not self.thresholds:
            raise ConfigError("thresholds: give a Centiloid threshold for at least one tracer (PIB, AV45)")
        if len(self.pixdim) != 3 or any(p <= 0 for p in self.pixdim):
            raise ConfigError(f"pixdim must be three positive voxel sizes in mm; got {self.pixdim}")
        if len(self.spatial_size) != 3 or any(s <= 0 for s in self.spatial_size):
            raise ConfigError(f"spatial_size must be three positive sizes; got {self.spatial_size}")
        if self.n_folds < 3:
            raise ConfigError(f"n_folds must be at least 3 (train, validation and test folds); got {self.n_folds}")
        for name, fold in (("test_fold", self.test_fold), ("val_fold", self.val_fold)):
            if fold is not None and not 0 <= fold < self.n_folds:
                raise ConfigError(f"{name} must be in 0 … {self.n_folds - 1}; got {fold}")
        if self.val_fold is not None and self.val_fold == self.test_fold:
            raise ConfigError(f"val_fold and test_fold must differ; both are {self.test_fold}")
        if self.pet not in ("optional", "require", "off"):
            raise ConfigError(f"pet must be 'optional', 'require' or 'off'; got {self.pet!r}")
        object.__setattr__(self, "pixdim", tuple(float(v) for v in self.pixdim))
        object.__setattr__(self, "spatial_size", tuple(int(v) for v in self.spatial_size))

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

    def is_positive(self, tracer: str, centiloid: float) -> bool:
        return centiloid > self.thresholds[tracer]

    def spec(self) -> DataSpec:
        """The item contract: ``mri`` (and ``pet``) ``(1, D, H, W)``, a binary amyloid target, visit metadata."""
        return DataSpec.from_dict(data_spec(self))

    def to_protocol(self) -> dict[str, Any]:
        """What ``protocol.json`` holds (every field, the dataset name, classes, version)."""
        return protocol_dict(self)


def as_protocol(protocol: Oasis3Protocol | Mapping[str, Any] | None) -> Oasis3Protocol:
    """An :class:`Oasis3Protocol` from itself, a mapping (e.g. protocol.json with extra keys) or None."""
    if isinstance(protocol, Oasis3Protocol):
        return protocol
    return from_known_keys(Oasis3Protocol, dict(protocol or {}))


def data_spec(protocol: Oasis3Protocol | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The data spec (``DataSpec`` fields as plain data) of stores built with ``protocol``."""
    p = as_protocol(protocol)
    axes = ["channel", "x", "y", "z"]
    inputs = [{"name": "mri", "shape": [1, *p.spatial_size], "axes": axes, "unit": "min-max scaled T1w"}]
    if p.pet != "off":
        inputs.append({"name": "pet", "shape": [1, *p.spatial_size], "axes": axes, "unit": "SUVR"})
    target = {"kind": "binary", "key": "label", "classes": list(CLASS_NAMES), "positive": CLASS_NAMES[1]}
    return {"dataset": DATASET, "inputs": inputs, "target": target, "metadata": list(METADATA)}


#: Manifest columns every item carries as metadata (strings in a batch).
METADATA = ("subject", "session", "pet_session", "tracer")


# ---------------------------------------------------------------- items


@dataclass(frozen=True)
class PetSession:
    """One amyloid PET session of the Centiloid table (with its PUP row and SUVR map where present)."""

    session: str
    subject: str
    tracer: str
    days: int
    centiloid: float
    suvr: float | None = None
    file: Path | None = None


# ---------------------------------------------------------------- discovery


def mr_session_of(path: Path) -> tuple[str, int] | None:
    """``(subject, days)`` of a T1w file in either layout, else None."""
    for parent in path.parents:
        if m := _MR_SESSION.match(parent.name):
            return m.group(1), int(m.group(2))
        if (s := _BIDS_SESSION.match(parent.name)) and (b := _BIDS_SUBJECT.match(parent.parent.name)):
            return b.group(1), int(s.group(1))
    return None


def pet_file_key(path: Path) -> tuple[str, str, int] | None:
    """``(subject, tracer, days)`` of a PUP SUVR map ``OAS30001_AV45_d2430n_msum_SUVR.nii[.gz]``, else None."""
    m = _SUVR_FILE.match(path.name)
    return (m.group(1), m.group(2).upper(), int(m.group(3))) if m else None


def _is_mri(path: Path, suffix: str) -> bool:
    name = path.name
    return (name.endswith(f"_{suffix}.nii.gz") or name.endswith(f"_{suffix}.nii")) and (mr_session_of(path) is not None)


def find_tables(root: Path, protocol: Oasis3Protocol) -> dict[str, Path]:
    """The tables by file name; the Centiloid table is required, the others are used where present."""
    where = Path(protocol.tables_dir) if protocol.tables_dir else root
    found: dict[str, Path] = {}
    for name in TABLES:
        hits = sorted(where.rglob(name)) if where.is_dir() else []
        if len(hits) > 1:
            raise DataError(where, f"{name} found {len(hits)} times ({', '.join(map(str, hits[:3]))}); set tables_dir")
        if hits:
            found[name] = hits[0]
    if CENTILOID_TABLE not in found:
        raise DataError(
            where,
            f"no {CENTILOID_TABLE} here or below. It is part of the OASIS-3 data files on NITRC-IR "
            "(https://nitrc.org/ir, project OASIS3); put it under the root or pass tables_dir",
        )
    return found


def find_subjects(
    root: str | Path, protocol: Oasis3Protocol | Mapping[str, Any] | None = None
) -> dict[str, list[Path]]:
    """Subject → its T1w files, PET SUVR maps and the tables (all the files its items depend on)."""
    root = Path(root)
    p = as_protocol(protocol)
    if not root.is_dir():
        raise DataError(root, "no such folder (expected an OASIS-3 download: OAS3xxxx_MR_dxxxx/ or sub-OAS3xxxx/)")
    tables = find_tables(root, p)
    per_subject: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*.nii*")):
        if _is_mri(path, p.mri_suffix):
            subject = mr_session_of(path)[0]  # type: ignore[index]
        elif (key := pet_file_key(path)) is not None and p.pet != "off":
            subject = key[0]
        else:
            continue
        per_subject.setdefault(subject, []).append(path)
    mri_subjects = {s for s, files in per_subject.items() if any(_is_mri(f, p.mri_suffix) for f in files)}
    if not mri_subjects:
        raise DataError(
            root,
            f"no *_{p.mri_suffix}.nii[.gz] file in OASIS-3 layout (OAS30001_MR_d0129/anat1/… or "
            "sub-OAS30001/ses-d0129/anat/…)",
        )
    return {s: [*per_subject[s], *tables.values()] for s in sorted(mri_subjects)}


# ---------------------------------------------------------------- tables


@functools.lru_cache(maxsize=8)
def _read_csv_cached(path: str, mtime_ns: int, size: int):
    import pandas as pd

    try:
        return pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise DataError(path, f"not a readable CSV table ({err})") from err


def read_table(path: Path, required: Sequence[str]) -> Any:
    """A table as a DataFrame, refusing it when a required column is missing."""
    stat = Path(path).stat()
    df = _read_csv_cached(str(path), stat.st_mtime_ns, stat.st_size)
    if missing := [c for c in required if c not in df.columns]:
        raise DataError(path, f"missing column(s) {missing}; found {list(df.columns)[:12]}")
    return df


def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def pet_sessions(
    subject: str,
    centiloid_csv: Path,
    protocol: Oasis3Protocol,
    pup_csv: Path | None = None,
    pet_files: Sequence[Path] = (),
    notes: dict[str, Any] | None = None,
) -> list[PetSession]:
    """The subject's amyloid PET sessions (tracers with a threshold), joined to PUP rows and SUVR maps."""
    notes = {} if notes is None else notes
    df = read_table(centiloid_csv, ["subject_id", "oasis_session_id", "tracer", protocol.centiloid_column])
    suvr_by_key: dict[tuple[str, str, int], float | None] = {}
    if pup_csv is not None:
        pup = read_table(pup_csv, ["PUP_PUPTIMECOURSEDATA ID", "tracer"])
        ids = pup["PUP_PUPTIMECOURSEDATA ID"].astype(str)
        values = pup[protocol.suvr_column] if protocol.suvr_column in pup.columns else [None] * len(pup)
        for label, value in zip(ids, values, strict=True):
            if (m := _PUP_SESSION.match(label)) and m.group(1) == subject:
                suvr_by_key[(subject, m.group(2).upper(), int(m.group(3)))] = _finite(value)
    files = {k: f for f in pet_files if (k := pet_file_key(f)) is not None}
    sessions = []
    for _, row in df[df["subject_id"].astype(str) == subject].iterrows():
        label = str(row["oasis_session_id"])
        if not (m := _PET_SESSION.match(label)):
            raise DataError(centiloid_csv, f"oasis_session_id {label!r} is not like OAS30001_AV45_d2430")
        tracer = str(row["tracer"]).strip().upper()
        if tracer not in protocol.thresholds:
            notes.setdefault("pet_sessions_other_tracer", []).append(label)
            continue
        centiloid = _finite(row[protocol.centiloid_column])
        if centiloid is None:
            value = row[protocol.centiloid_column]
            raise DataError(centiloid_csv, f"{label}: {protocol.centiloid_column} is missing ({value!r})")
        key = (subject, tracer, int(m.group(3)))
        sessions.append(PetSession(label, subject, tracer, key[2], centiloid, suvr_by_key.get(key), files.get(key)))
    return sorted(sessions, key=lambda s: (s.days, s.tracer))


def match_visit(mr_days: int, candidates: Sequence[PetSession], max_days: int) -> PetSession | None:
    """The PET session nearest in days to an MR session, within ``±max_days`` inclusive; ties go to the earlier."""
    near = [c for c in candidates if abs(c.days - mr_days) <= max_days]
    return min(near, key=lambda c: (abs(c.days - mr_days), c.days), default=None)


def clinical_visits(subject: str, cdr_csv: Path) -> list[dict[str, Any]]:
    """The subject's UDSb4 visits: days, CDR global, CDR sum of boxes, MMSE and first diagnosis where present."""
    df = read_table(cdr_csv, ["OASIS_session_label"])
    visits = []
    for _, row in df.iterrows():
        m = _CLINICAL_SESSION.match(str(row["OASIS_session_label"]))
        if m and m.group(1) == subject:
            visits.append(
                {
                    "days": int(m.group(2)),
                    "cdr": _finite(row.get("CDRTOT")),
                    "cdr_sum": _finite(row.get("CDRSUM")),
                    "mmse": _finite(row.get("MMSE")),
                    "dx": None if not isinstance(row.get("dx1"), str) else row.get("dx1"),
                }
            )
    return visits


# ---------------------------------------------------------------- volumes


def quiet_monai_import() -> None:
    """Import MONAI with warnings logged at import time silenced (its optional torchao import warns about
    kernels this machine cannot load), so a CLI error stays one line."""
    import logging
    import sys

    if "monai" in sys.modules:
        return
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        import monai
        import monai.transforms  # noqa: F401
    finally:
        logging.disable(previous)


@functools.lru_cache(maxsize=4)
def _transforms(pixdim: tuple[float, ...], spatial_size: tuple[int, ...], scale: bool):
    quiet_monai_import()
    from monai.data import NibabelReader
    from monai.transforms import (
        Compose,
        EnsureChannelFirst,
        LoadImage,
        Orientation,
        ResizeWithPadOrCrop,
        ScaleIntensity,
        Spacing,
    )

    # An explicit NibabelReader also reads Analyze .hdr/.img pairs (OASIS-1/2), which auto-selection refuses.
    steps = [
        LoadImage(reader=NibabelReader(squeeze_non_spatial_dims=True), image_only=True, dtype=np.float32),
        EnsureChannelFirst(channel_dim="no_channel"),
        Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacing(pixdim=pixdim, mode="bilinear"),
    ]
    if scale:
        steps.append(ScaleIntensity(minv=0.0, maxv=1.0))
    steps.append(ResizeWithPadOrCrop(spatial_size=spatial_size))
    return Compose(steps)


def check_3d(path: Path) -> tuple[int, ...]:
    """The spatial shape of a NIfTI or Analyze file, refusing anything but one 3-D volume."""
    import nibabel as nib

    try:
        shape = tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception as err:  # nibabel raises many types for damaged headers
        raise DataError(path, f"not a readable NIfTI/Analyze image ({type(err).__name__}: {err})") from err
    spatial = shape[:3] + tuple(s for s in shape[3:] if s != 1)
    if len(spatial) != 3:
        raise DataError(path, f"expected one 3-D volume; got shape {shape} (a 4-D series?)")
    return spatial


def load_volume(path: str | Path, protocol: Oasis3Protocol | None = None, scale: bool = True) -> np.ndarray:
    """One volume through the MONAI transforms: ``(1, *spatial_size)`` float32 (RAS, resampled, cropped/padded)."""
    path = Path(path)
    p = protocol or Oasis3Protocol()
    check_3d(path)
    try:
        out = _transforms(tuple(p.pixdim), tuple(p.spatial_size), scale)(str(path))
    except Exception as err:  # MONAI wraps reader errors (truncated gzip, short data) in RuntimeError
        cause = err.__cause__ or err
        raise DataError(path, f"cannot read the volume ({type(cause).__name__}: {str(cause)[:200]})") from err
    arr = np.nan_to_num(np.asarray(out, dtype=np.float32))
    if not np.any(arr):
        raise DataError(path, "the volume is empty (all zeros) after resampling")
    return arr


# ---------------------------------------------------------------- per subject


@dataclass
class Visit:
    """One MR session matched to a PET session (volumes not read yet)."""

    session: str
    days: int
    mri_file: Path
    match: PetSession
    row: dict[str, Any]


def plan_visits(
    subject: str, paths: Sequence[Path], protocol: Oasis3Protocol | Mapping[str, Any] | None = None
) -> tuple[list[Visit], dict[str, Any]]:
    """The subject's matched visits with their manifest rows, from file names and tables only (no volume read)."""
    p = as_protocol(protocol)
    paths = [Path(x) for x in paths]
    by_name = {x.name: x for x in paths if x.name in TABLES}
    if CENTILOID_TABLE not in by_name:
        raise DataError(paths[0] if paths else None, f"subject {subject}: no {CENTILOID_TABLE} among its files")
    notes: dict[str, Any] = {}
    mr_files: dict[int, list[Path]] = {}
    for x in paths:
        if _is_mri(x, p.mri_suffix) and (key := mr_session_of(x)) is not None and key[0] == subject:
            mr_files.setdefault(key[1], []).append(x)
    if not mr_files:
        raise DataError(paths[0] if paths else None, f"subject {subject}: no *_{p.mri_suffix} file among its files")
    sessions = pet_sessions(
        subject, by_name[CENTILOID_TABLE], p, by_name.get(PUP_TABLE), [x for x in paths if pet_file_key(x)], notes
    )
    clinical = clinical_visits(subject, by_name[CLINICAL_TABLE]) if CLINICAL_TABLE in by_name else []
    visits: list[Visit] = []
    for days in sorted(mr_files):
        files = sorted(mr_files[days])
        session = f"{subject}_MR_d{days:04d}"
        if len(files) > 1:
            notes.setdefault("extra_runs_ignored", {})[session] = [f.name for f in files[1:]]
        match = match_visit(days, sessions, p.max_days)
        if match is None:
            notes.setdefault("mr_sessions_without_pet", []).append(session)
            continue
        if p.pet == "require" and match.file is None:
            notes.setdefault("mr_sessions_without_pet_volume", []).append(session)
            continue
        visit = min(clinical, key=lambda v: abs(v["days"] - days), default=None)
        if visit is not None and abs(visit["days"] - days) > p.max_days:
            visit = None
        label = int(p.is_positive(match.tracer, match.centiloid))
        row = {
            "subject": subject,
            "session": session,
            "days": days,
            "pet_session": match.session,
            "pet_days": match.days,
            "days_apart": match.days - days,
            "tracer": match.tracer,
            "centiloid": match.centiloid,
            "suvr": match.suvr,
            "has_pet": match.file is not None and p.pet != "off",
            "label": label,
            "label_name": CLASS_NAMES[label],
            "cdr": visit["cdr"] if visit else None,
            "mmse": visit["mmse"] if visit else None,
            "dx": visit["dx"] if visit else None,
            "mri_file": files[0].name,
            "pet_file": match.file.name if match.file else None,
        }
        visits.append(Visit(session, days, files[0], match, row))
    if not visits:
        listed = ", ".join(f"d{d:04d}" for d in sorted(mr_files))
        pets = ", ".join(f"{s.tracer} d{s.days:04d}{'' if s.file else ' (no SUVR map)'}" for s in sessions) or "none"
        need = " and an SUVR map (pet=require)" if p.pet == "require" else ""
        raise DataError(
            by_name[CENTILOID_TABLE],
            f"subject {subject}: no MR session ({listed}) has an amyloid PET session with a Centiloid value{need} "
            f"within ±{p.max_days} days (PET sessions: {pets})",
        )
    return visits, notes


def process_subject(
    subject: str, paths: Sequence[Path], protocol: Oasis3Protocol | Mapping[str, Any] | None = None
) -> SubjectItems:
    """All matched visits of one subject: arrays ``mri``/``pet`` of shape ``(n, 1, D, H, W)`` and manifest rows.

    When ``protocol`` is a protocol.json mapping with ``subject_splits``, each row carries its subject's split.
    """
    p = as_protocol(protocol)
    visits, notes = plan_visits(subject, paths, p)
    splits = protocol.get("subject_splits") if isinstance(protocol, Mapping) else None
    split = (splits or {}).get(subject)
    if splits is not None and split is None:
        raise DataError(visits[0].mri_file, f"subject {subject}: in no split of the protocol (subject_splits)")
    mri, pet, rows = [], [], []
    for v in visits:
        mri.append(load_volume(v.mri_file, p, scale=True))
        if p.pet != "off":
            pet.append(load_volume(v.match.file, p, scale=False) if v.match.file else np.zeros_like(mri[-1]))
        rows.append({**v.row, "split": split} if split is not None else dict(v.row))
    arrays = {"mri": np.stack(mri)}
    if p.pet != "off":
        arrays["pet"] = np.stack(pet)
    notes["n_visits_without_pet_volume"] = sum(1 for r in rows if not r["has_pet"])
    return SubjectItems(arrays=arrays, rows=rows, notes=notes)


# ---------------------------------------------------------------- splits


def assign_folds(rows: Sequence[Mapping[str, Any]], n_folds: int = 5, seed: int = 0) -> dict[str, int]:
    """Subject → fold, by scikit-learn's StratifiedGroupKFold (visits grouped by subject, stratified by label)."""
    from sklearn.model_selection import StratifiedGroupKFold

    subjects = np.array([str(r["subject"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    if len(set(subjects.tolist())) < n_folds:
        raise ConfigError(f"{n_folds} folds need at least {n_folds} subjects; got {len(set(subjects.tolist()))}")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds: dict[str, int] = {}
    per_class = {c: len(set(subjects[labels == c].tolist())) for c in (0, 1)}
    if min(per_class.values()) < n_folds:
        raise ConfigError(
            f"{n_folds} folds stratified by amyloid status need at least {n_folds} subjects of each status; got "
            f"{per_class[0]} negative and {per_class[1]} positive (lower n_folds)"
        )
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(rows)), labels, subjects)):
        for subject in set(subjects[test].tolist()):
            folds[subject] = fold
    return folds


def fold_splits(folds: Mapping[str, int], test_fold: int, val_fold: int | None = None) -> dict[str, list[str]]:
    """Train/val/test subject lists: ``test_fold`` tests, ``val_fold`` (default the next fold) validates."""
    n = max(folds.values()) + 1
    val_fold = (test_fold + 1) % n if val_fold is None else val_fold
    if val_fold == test_fold:
        raise ConfigError(f"val_fold and test_fold must differ; both are {test_fold}")
    splits = {
        "train": sorted(s for s, f in folds.items() if f not in (test_fold, val_fold)),
        "val": sorted(s for s, f in folds.items() if f == val_fold),
        "test": sorted(s for s, f in folds.items() if f == test_fold),
    }
    check_no_leakage(splits)
    return splits


def plan_splits(
    sources: Mapping[str, Sequence[Path]], protocol: Oasis3Protocol, skip_bad: bool = True
) -> tuple[dict[str, str], dict[str, str]]:
    """Subject → train/val/test from the tables (StratifiedGroupKFold over matched visits), and the subjects that
    have no matched visit (→ reason). The folds are drawn before any volume is read, so every row knows its split.
    """
    rows, unplanned = [], {}
    for subject, paths in sources.items():
        try:
            rows += [v.row for v in plan_visits(subject, paths, protocol)[0]]
        except DataError as err:
            if not skip_bad:
                raise DataError(None, f"{err} (use --skip-bad to skip such subjects and list them)") from None
            unplanned[subject] = str(err)
    if not rows:
        return {}, unplanned
    folds = assign_folds(rows, protocol.n_folds, protocol.seed)
    roles = fold_splits(folds, protocol.test_fold, protocol.val_fold)
    return {s: role for role, subjects in roles.items() for s in subjects}, unplanned


def preprocess_oasis3(
    root: str | Path,
    out: str | Path,
    protocol: Oasis3Protocol | None = None,
    *,
    jobs: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
) -> BuildReport:
    """An OASIS-3 download (either layout, with the tables) → a store of per-visit ``mri``/``pet`` items.

    Splits by subject, stratified by amyloid status (``n_folds`` folds; ``test_fold`` tests, ``val_fold``
    validates). A subject without any matched visit raises :class:`DataError` naming the table, unless
    ``skip_bad``: then it is skipped and listed in ``report.json``.
    """
    p = protocol or Oasis3Protocol()
    sources = find_subjects(root, p)
    splits, unplanned = plan_splits(sources, p, skip_bad)
    if not splits:
        raise DataError(Path(root), f"no subject has a matched MR/PET visit ({len(unplanned)} subjects skipped)")
    kept = {s: paths for s, paths in sources.items() if s in splits}
    report = build_store(
        out, kept, process_subject, {**p.to_protocol(), "subject_splits": splits}, p.spec(),
        jobs=jobs, skip_bad=skip_bad, progress=progress,
    )  # fmt: skip
    report.skipped.update(unplanned)
    report.skipped = dict(sorted(report.skipped.items()))
    notes = report.notes
    write_json(
        report.out / "report.json",
        {
            "dataset": DATASET,
            **report.to_dict(),
            "mr_sessions_without_pet": sorted(x for n in notes.values() for x in n.get("mr_sessions_without_pet", [])),
            "mr_sessions_without_pet_volume": sorted(
                x for n in notes.values() for x in n.get("mr_sessions_without_pet_volume", [])
            ),
            "n_visits_without_pet_volume": sum(int(n.get("n_visits_without_pet_volume", 0)) for n in notes.values()),
        },
    )
    return report


def protocol_dict(protocol: Oasis3Protocol) -> dict[str, Any]:
    """What protocol.json holds for an OASIS-3 store (every field, the dataset name, classes, version)."""
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(protocol).items()}
    out.update(dataset=DATASET, class_names=list(CLASS_NAMES), processing_version=PROCESSING_VERSION)
    return out
