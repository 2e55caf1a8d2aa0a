"""ABIDE Preprocessed (PCP) reader: ROI time series (``.1D``) in both release layouts, the phenotypic table,
the published subsets as filters, bad-ROI detection and the per-subject function the store calls.

Layouts (``datasets/abide.md``):

- nilearn ``fetch_abide_pcp``: ``<root>/ABIDE_pcp/<pipeline>/<strategy>/<FILE_ID>_<derivative>.1D``
- PCP script / S3: ``<root>/Outputs/<pipeline>/<strategy>/<derivative>/<FILE_ID>_<derivative>.1D``

``root`` may also be the ``ABIDE_pcp`` or ``Outputs`` folder itself. Subjects are keyed by ``FILE_ID``.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..data.spec import DataSpec, InputSpec, TargetSpec
from ..data.store import SubjectItems
from ..errors import ConfigError, DataError

PIPELINES = ("ccs", "cpac", "dparsf", "niak")
STRATEGIES = ("filt_global", "filt_noglobal", "nofilt_global", "nofilt_noglobal")
#: ROI derivative → number of ROI columns in the released ``.1D`` files. AAL 116 is checked on a real file
#: (``Caltech_0051456_rois_aal.1D``); the others are the counts third-party ABIDE code uses (unconfirmed).
ATLAS_ROIS: dict[str, int] = {
    "rois_aal": 116,
    "rois_cc200": 200,
    "rois_cc400": 392,
    "rois_ho": 111,
    "rois_ez": 116,
    "rois_tt": 97,
    "rois_dosenbach160": 161,
}
PHENOTYPIC_FILE = "Phenotypic_V1_0b_preprocessed1.csv"
PHENOTYPIC_COLUMNS = ("FILE_ID", "SITE_ID", "DX_GROUP", "AGE_AT_SCAN", "SEX")
#: label 1 = autism (DX_GROUP 1, the positive class), label 0 = control (DX_GROUP 2).
CLASSES = ("control", "autism")
POSITIVE = "autism"
MISSING = -9999
#: nilearn's ``quality_checked=True`` rule (``fetch_abide_pcp``): column → accepted ratings.
NILEARN_QC = {
    "qc_rater_1": ("OK",),
    "qc_anat_rater_2": ("OK", "maybe"),
    "qc_func_rater_2": ("OK", "maybe"),
    "qc_anat_rater_3": ("OK",),
    "qc_func_rater_3": ("OK",),
}
CONNECTIVITY_KINDS = ("correlation", "partial correlation", "tangent")
ESTIMATORS = ("empirical", "ledoit_wolf")
SOURCE_HINT = (
    "ABIDE Preprocessed is at https://fcon_1000.projects.nitrc.org/indi/abide/abide_I.html "
    "(nilearn.datasets.fetch_abide_pcp or the PCP script download_abide_preproc.py); biokd never downloads it"
)


@dataclass(frozen=True)
class AbideProtocol:
    """Every choice that shapes the ABIDE items (written into protocol.json)."""

    pipeline: str = "cpac"
    strategy: str = "filt_noglobal"
    atlas: str = "rois_cc200"
    n_rois: int | None = None  # None: ATLAS_ROIS[atlas]
    subset: Literal["all", "quality_checked"] = "all"  # all = every row with files (1035 in the release)
    max_mean_fd: float | None = None  # keep func_mean_fd < max_mean_fd (PCP script rule: 0.2); missing FD dropped
    sites: tuple[str, ...] = ()  # SITE_ID values to keep; empty = all
    min_timepoints: int = 10
    bad_roi: Literal["drop_subject", "drop_roi", "fail"] = "drop_subject"
    excluded_rois: tuple[str, ...] = ()  # ROI labels dropped for everyone (filled by plan_roi_exclusion)
    connectivity: Literal["correlation", "partial correlation", "tangent"] = "correlation"
    estimator: Literal["empirical", "ledoit_wolf"] = "empirical"
    fisher_z: bool = False  # arctanh of off-diagonal values, diagonal set to 0
    harmonize: Literal["none", "combat"] = "none"  # ComBat fitted on training subjects (group stage)
    keep_timeseries: bool = False
    #: The split of this build (one ``split`` column per build): stratified subject k-fold (test = fold ``fold``
    #: of ``n_folds``) or leave-one-site-out (test = every subject of ``test_site``); validation = ``val_fraction``
    #: of the remaining subjects, stratified by label. ``--set split=leave_one_site_out --set test_site=NYU``.
    split: Literal["stratified_kfold", "leave_one_site_out"] = "stratified_kfold"
    n_folds: int = 5
    fold: int = 0
    test_site: str = ""
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("pipeline", self.pipeline, PIPELINES),
            ("strategy", self.strategy, STRATEGIES),
            ("atlas", self.atlas, tuple(ATLAS_ROIS)),
            ("subset", self.subset, ("all", "quality_checked")),
            ("bad_roi", self.bad_roi, ("drop_subject", "drop_roi", "fail")),
            ("connectivity", self.connectivity, CONNECTIVITY_KINDS),
            ("estimator", self.estimator, ESTIMATORS),
            ("harmonize", self.harmonize, ("none", "combat")),
            ("split", self.split, ("stratified_kfold", "leave_one_site_out")),
        ):
            if value not in allowed:
                hint = " (the pipeline is 'ccs'; nilearn's docstring spells it 'css')" if value == "css" else ""
                raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}{hint}")
        if not 0 <= self.fold < self.n_folds or self.n_folds < 2:
            raise ConfigError(
                f"fold must be in 0..n_folds-1 with n_folds >= 2; got fold={self.fold}, n_folds={self.n_folds}"
            )
        if self.split == "leave_one_site_out" and not self.test_site:
            raise ConfigError("split='leave_one_site_out' needs test_site (a SITE_ID), e.g. --set test_site=NYU")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1); got {self.val_fraction}")
        if self.max_mean_fd is not None and self.max_mean_fd <= 0:
            raise ConfigError(f"max_mean_fd must be positive; got {self.max_mean_fd}")
        object.__setattr__(self, "sites", tuple(self.sites))
        object.__setattr__(self, "excluded_rois", tuple(str(r) for r in self.excluded_rois))

    @property
    def rois(self) -> int:
        return self.n_rois if self.n_rois is not None else ATLAS_ROIS[self.atlas]

    @property
    def group_stage(self) -> bool:
        """Whether connectivity needs a stage fitted on the training subjects (tangent or ComBat)."""
        return self.connectivity == "tangent" or self.harmonize == "combat"

    @property
    def n_kept_rois(self) -> int:
        return self.rois - len(self.excluded_rois)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def spec(self, roi_labels: Sequence[str] | None = None) -> DataSpec:
        """The data spec: ``fc`` (R, R) over ROIs (labels from the files when known), autism vs control."""
        n = self.n_kept_rois
        labels = {"roi": [str(r) for r in roi_labels]} if roi_labels is not None else {}
        unit = "Fisher z" if self.fisher_z and self.connectivity != "tangent" else self.connectivity
        return DataSpec(
            dataset="abide",
            inputs=[InputSpec("fc", [n, n], ["roi", "roi"], unit=unit, labels=labels)],
            target=TargetSpec(kind="binary", classes=list(CLASSES), positive=POSITIVE),
            metadata=["subject", "site", "age", "sex"],
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | AbideProtocol) -> AbideProtocol:
        """From protocol.json (extra keys ignored) or an AbideProtocol."""
        if isinstance(data, AbideProtocol):
            return data
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
        return cls(**kwargs)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# ----------------------------------------------------------------------------------------------- phenotypes


def read_phenotypic(path: str | Path) -> pd.DataFrame:
    """The phenotypic CSV with ``-9999`` and blanks as missing; refuses a table without the columns biokd uses."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"phenotypic table not found ({PHENOTYPIC_FILE}; {SOURCE_HINT})")
    try:
        table = pd.read_csv(path, na_values=[MISSING, str(MISSING), "-9999.0"], keep_default_na=True, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(path, f"not a readable CSV: {err}") from err
    missing = [c for c in PHENOTYPIC_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(
            path, f"phenotypic table lacks column(s) {', '.join(missing)} (found {list(table.columns)[:8]})"
        )
    table["FILE_ID"] = table["FILE_ID"].astype(str).str.strip()
    table["SITE_ID"] = table["SITE_ID"].astype(str).str.strip()
    return table


@functools.lru_cache(maxsize=4)
def _phenotypic_cached(path: str, mtime_ns: int) -> pd.DataFrame:
    return read_phenotypic(path).set_index("FILE_ID", drop=False)


def phenotypic_row(path: str | Path, file_id: str) -> pd.Series:
    """One subject's phenotypic row (the table is read once per process)."""
    path = Path(path)
    table = _phenotypic_cached(str(path), path.stat().st_mtime_ns if path.exists() else 0)
    if file_id == "no_filename":
        raise DataError(path, "FILE_ID 'no_filename' has no preprocessed files")
    if file_id not in table.index:
        raise DataError(path, f"subject {file_id!r} is in the data folder but not in the phenotypic table")
    row = table.loc[file_id]
    if isinstance(row, pd.DataFrame):
        raise DataError(path, f"FILE_ID {file_id!r} appears {len(row)} times in the phenotypic table")
    return row


def select_phenotypes(table: pd.DataFrame, protocol: AbideProtocol) -> pd.DataFrame:
    """Rows kept by the protocol's filters: files present (FILE_ID != no_filename), QC subset, mean FD, sites."""
    keep = table["FILE_ID"] != "no_filename"
    if protocol.subset == "quality_checked":
        for column, accepted in NILEARN_QC.items():
            if column not in table.columns:
                raise ConfigError(f"subset='quality_checked' needs column {column!r} in the phenotypic table")
            keep &= table[column].isin(accepted)
    if protocol.max_mean_fd is not None:
        if "func_mean_fd" not in table.columns:
            raise ConfigError("max_mean_fd needs column 'func_mean_fd' in the phenotypic table")
        keep &= pd.to_numeric(table["func_mean_fd"], errors="coerce") < protocol.max_mean_fd
    if protocol.sites:
        unknown = sorted(set(protocol.sites) - set(table["SITE_ID"]))
        if unknown:
            raise ConfigError(f"sites {unknown} are not SITE_ID values of the table ({sorted(set(table['SITE_ID']))})")
        keep &= table["SITE_ID"].isin(protocol.sites)
    return table[keep]


def subset_counts(table: pd.DataFrame) -> dict[str, int]:
    """Sizes of the published subsets of a phenotypic table (1112 / 1035 / 871 / 884 in the release)."""
    return {
        "rows": len(table),
        "with_files": len(select_phenotypes(table, AbideProtocol())),
        "quality_checked": len(select_phenotypes(table, AbideProtocol(subset="quality_checked"))),
        "with_files_mean_fd_below_0.2": len(select_phenotypes(table, AbideProtocol(max_mean_fd=0.2))),
        "sites": int(table["SITE_ID"].nunique()),
    }


# ------------------------------------------------------------------------------------------------- layouts


def roi_folder(root: str | Path, protocol: AbideProtocol) -> tuple[Path, str]:
    """The folder holding the protocol's ``.1D`` files and the layout's name ("nilearn" or "pcp")."""
    root = Path(root)
    p, s, d = protocol.pipeline, protocol.strategy, protocol.atlas
    candidates = [
        (root / "ABIDE_pcp" / p / s, "nilearn"),
        (root / p / s, "nilearn") if root.name == "ABIDE_pcp" else None,
        (root / "Outputs" / p / s / d, "pcp"),
        (root / p / s / d, "pcp") if root.name == "Outputs" else None,
    ]
    for folder, layout in filter(None, candidates):
        if folder.is_dir() and any(folder.glob(f"*_{d}.1D")):
            return folder, layout
    raise DataError(
        root,
        f"no {d} files for pipeline {p!r}, strategy {s!r}: expected <root>/ABIDE_pcp/{p}/{s}/<FILE_ID>_{d}.1D "
        f"(nilearn) or <root>/Outputs/{p}/{s}/{d}/<FILE_ID>_{d}.1D (PCP script); {SOURCE_HINT}",
    )


def find_phenotypic(root: str | Path, phenotypic: str | Path | None = None) -> Path:
    """The phenotypic CSV: ``phenotypic`` if given, else beside the layout folders (where both tools put it)."""
    if phenotypic is not None:
        return Path(phenotypic)
    root = Path(root)
    for folder in (root, root / "ABIDE_pcp", root.parent):
        if (folder / PHENOTYPIC_FILE).is_file():
            return folder / PHENOTYPIC_FILE
    raise DataError(root, f"{PHENOTYPIC_FILE} not found in the root or its ABIDE_pcp folder; pass it explicitly")


@dataclass
class AbideSurvey:
    """What a root holds for a protocol: the subjects to process and every count of what was left out."""

    subjects: dict[str, list[Path]]
    layout: str
    folder: Path
    phenotypic: Path
    counts: dict[str, int] = field(default_factory=dict)
    missing_files: list[str] = field(default_factory=list)  # selected in the table, no file
    not_in_table: list[str] = field(default_factory=list)  # file present, FILE_ID unknown (kept: the store refuses)
    excluded: list[str] = field(default_factory=list)  # file present, filtered out by the protocol


def survey(root: str | Path, protocol: AbideProtocol, phenotypic: str | Path | None = None) -> AbideSurvey:
    """Join the ``.1D`` files of ``root`` with the phenotypic table under the protocol's filters."""
    folder, layout = roi_folder(root, protocol)
    pheno_path = find_phenotypic(root, phenotypic)
    table = read_phenotypic(pheno_path)
    selected = select_phenotypes(table, protocol)
    suffix = f"_{protocol.atlas}.1D"
    files = {p.name[: -len(suffix)]: p for p in sorted(folder.glob(f"*{suffix}"))}
    known = set(table["FILE_ID"])
    wanted = set(selected["FILE_ID"])
    subjects: dict[str, list[Path]] = {}
    not_in_table, excluded = [], []
    for file_id, path in files.items():
        if file_id in wanted:
            subjects[file_id] = [path, pheno_path]
        elif file_id not in known or file_id == "no_filename":
            not_in_table.append(file_id)
            subjects[file_id] = [path, pheno_path]  # process_subject raises a DataError naming the file
        else:
            excluded.append(file_id)
    missing = sorted(wanted - set(files))
    counts = {
        "table_rows": len(table),
        "selected_in_table": len(wanted),
        "files": len(files),
        "subjects": len(subjects) - len(not_in_table),
        "missing_files": len(missing),
        "not_in_table": len(not_in_table),
        "excluded_by_filters": len(excluded),
    }
    return AbideSurvey(subjects, layout, folder, pheno_path, counts, missing, not_in_table, excluded)


def find_subjects(
    root: str | Path, protocol: AbideProtocol | Mapping[str, Any], phenotypic: str | Path | None = None
) -> dict[str, list[Path]]:
    """``{FILE_ID: [roi_file, phenotypic_csv]}`` for the store (see :func:`survey` for the counts)."""
    return survey(root, AbideProtocol.from_mapping(protocol), phenotypic).subjects


# ------------------------------------------------------------------------------------------------ .1D files


def read_roi_timeseries(path: str | Path, n_rois: int | None = None) -> tuple[np.ndarray, list[str]]:
    """A ``.1D`` file as ``(n_timepoints, n_rois)`` float64 and its ROI labels (header ``#2001\\t#2002…``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"ROI time-series file not found; {SOURCE_HINT}")
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise DataError(path, f"not a text .1D file ({err})") from err
    lines = text.splitlines()
    labels: list[str] = []
    if lines and lines[0].lstrip().startswith("#"):
        labels = [tok.lstrip("#") for tok in lines[0].split()]
        labels = [lab for lab in labels if lab]
        lines = lines[1:]
    body = "\n".join(line for line in lines if line.strip())
    if not body:
        raise DataError(path, "no time points (the file holds only a header line)" if labels else "empty file")
    try:
        data = np.loadtxt(io.StringIO(body), dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise DataError(path, f"non-numeric or ragged rows: {err}") from err
    if labels and len(labels) != data.shape[1]:
        raise DataError(path, f"header names {len(labels)} ROIs but the rows hold {data.shape[1]} columns")
    if n_rois is not None and data.shape[1] != n_rois:
        raise DataError(path, f"{data.shape[1]} ROI columns; the atlas has {n_rois}")
    if not labels:
        labels = [str(i + 1) for i in range(data.shape[1])]
    return data, labels


def bad_roi_columns(timeseries: np.ndarray) -> np.ndarray:
    """Indices of ROI columns that are constant or hold NaN/inf (they make correlations undefined)."""
    finite = np.isfinite(timeseries).all(axis=0)
    std = np.where(finite, np.nanstd(np.where(np.isfinite(timeseries), timeseries, 0.0), axis=0), 0.0)
    return np.flatnonzero(~finite | (std <= 0))


def scan_bad_rois(subjects: Mapping[str, Sequence[Path]], protocol: AbideProtocol) -> dict[str, list[str]]:
    """Per subject, the labels of its bad ROI columns (subjects with none are left out). Unreadable files raise."""
    found: dict[str, list[str]] = {}
    for subject, paths in subjects.items():
        ts, labels = read_roi_timeseries(paths[0], protocol.rois)
        bad = bad_roi_columns(ts)
        if len(bad):
            found[subject] = [labels[i] for i in bad]
    return found


def plan_roi_exclusion(subjects: Mapping[str, Sequence[Path]], protocol: AbideProtocol) -> AbideProtocol:
    """For ``bad_roi="drop_roi"``: the protocol with every ROI bad in any subject excluded for everyone."""
    bad = scan_bad_rois(subjects, protocol)
    union = sorted({lab for labels in bad.values() for lab in labels} | set(protocol.excluded_rois))
    return dataclasses.replace(protocol, excluded_rois=tuple(union))


# --------------------------------------------------------------------------------------------- per subject


#: The per-subject result is the store's :class:`SubjectItems` (kept under its old name for callers).
AbideItems = SubjectItems


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if not np.isfinite(out) or out == MISSING else out


def subject_row(subject: str, row: pd.Series, roi_path: Path, n_timepoints: int) -> dict[str, Any]:
    """The manifest row of one subject."""
    dx = _number(row.get("DX_GROUP"))
    if dx not in (1.0, 2.0):
        raise DataError(
            roi_path, f"DX_GROUP of {subject} is {row.get('DX_GROUP')!r}; expected 1 (autism) or 2 (control)"
        )
    label = 1 if dx == 1.0 else 0
    sex = _number(row.get("SEX"))
    sub_id = _number(row.get("SUB_ID"))
    return {
        "subject": subject,
        "sub_id": int(sub_id) if sub_id is not None else None,
        "site": str(row["SITE_ID"]),
        "label": label,
        "label_name": CLASSES[label],
        "age": _number(row.get("AGE_AT_SCAN")),
        "sex": {1.0: "M", 2.0: "F"}.get(sex) if sex is not None else None,
        "mean_fd": _number(row.get("func_mean_fd")),
        "n_timepoints": int(n_timepoints),
        "file": roi_path.name,
    }


def load_subject_timeseries(
    subject: str, paths: Sequence[Path], protocol: AbideProtocol
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """A subject's time series after the bad-ROI policy: ``(T, R')``, the kept labels and notes."""
    roi_path = Path(paths[0])
    ts, labels = read_roi_timeseries(roi_path, protocol.rois)
    if ts.shape[0] < protocol.min_timepoints:
        raise DataError(roi_path, f"{ts.shape[0]} time points; at least {protocol.min_timepoints} are needed")
    notes: dict[str, Any] = {}
    bad_idx = bad_roi_columns(ts)
    bad = [labels[i] for i in bad_idx]
    if bad:
        notes["bad_rois"] = {subject: bad}
        if protocol.bad_roi == "fail":
            raise DataError(roi_path, f"{len(bad)} constant or non-finite ROI column(s): {', '.join(bad)}")
        if protocol.bad_roi == "drop_roi":
            left = sorted(set(bad) - set(protocol.excluded_rois))
            if left:
                raise DataError(
                    roi_path,
                    f"bad ROI column(s) {', '.join(left)} are not in excluded_rois; run plan_roi_exclusion first",
                )
    if protocol.excluded_rois:
        unknown = sorted(set(protocol.excluded_rois) - set(labels))
        if unknown:
            raise DataError(roi_path, f"excluded_rois {unknown} are not ROI labels of this file")
        keep = [i for i, lab in enumerate(labels) if lab not in set(protocol.excluded_rois)]
        ts, labels = ts[:, keep], [labels[i] for i in keep]
    return ts, labels, notes


def process_subject(subject: str, paths: Sequence[Path], protocol: Mapping[str, Any] | AbideProtocol) -> SubjectItems:
    """What the store calls for one subject: ``fc`` (1, R, R) float32 (unless a group stage computes it), the
    time series (1, T, R) when kept or needed by the group stage, one manifest row and notes.

    ``bad_roi="drop_subject"`` returns zero items with the reason in ``notes["dropped"]``.
    """
    from .connectivity import subject_connectivity

    proto = AbideProtocol.from_mapping(protocol)
    roi_path, pheno_path = Path(paths[0]), Path(paths[1])
    file_id = roi_path.name.removesuffix(f"_{proto.atlas}.1D")
    if file_id == "no_filename":
        raise DataError(roi_path, "FILE_ID 'no_filename' is not a subject (the table marks it as having no files)")
    try:
        row = phenotypic_row(pheno_path, file_id)
    except DataError as err:
        raise DataError(roi_path, err.problem) from None
    ts, labels, notes = load_subject_timeseries(subject, paths, proto)
    manifest = subject_row(subject, row, roi_path, ts.shape[0])
    manifest["split"] = split_of(file_id, roi_path.parent, pheno_path, proto)
    n_kept = len(labels)
    if notes.get("bad_rois") and proto.bad_roi == "drop_subject":
        notes["dropped"] = {subject: f"bad ROI column(s): {', '.join(notes['bad_rois'][subject])}"}
        return SubjectItems({"fc": np.zeros((0, n_kept, n_kept), np.float32)}, [], notes)
    arrays: dict[str, np.ndarray] = {}
    if proto.connectivity != "tangent":
        fc = subject_connectivity(ts, proto.connectivity, proto.estimator, proto.fisher_z)
        arrays["fc"] = fc[None].astype(np.float32)
    if proto.keep_timeseries or proto.group_stage:
        arrays["timeseries"] = ts[None].astype(np.float32)
    notes["roi_labels"] = labels
    return SubjectItems(arrays, [manifest], notes)


def roi_labels_of(paths: Iterable[Path], protocol: AbideProtocol) -> list[str]:
    """The ROI labels kept by the protocol, read from the first file."""
    first = next(iter(paths))
    _, labels = read_roi_timeseries(first, protocol.rois)
    return [lab for lab in labels if lab not in set(protocol.excluded_rois)]


# ------------------------------------------------------------------------------------------------- splits


def assign_splits(subjects: pd.DataFrame, protocol: AbideProtocol) -> dict[str, str]:
    """``{FILE_ID: train|val|test}`` for a table of subjects (columns FILE_ID, SITE_ID, DX_GROUP), disjoint by
    subject: stratified k-fold by label (test = fold ``fold``) or leave-one-site-out (test = ``test_site``)."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    ids = subjects["FILE_ID"].astype(str).to_numpy()
    labels = (pd.to_numeric(subjects["DX_GROUP"], errors="coerce") == 1).astype(int).to_numpy()
    if protocol.split == "leave_one_site_out":
        sites = subjects["SITE_ID"].astype(str).to_numpy()
        if protocol.test_site not in set(sites):
            raise ConfigError(f"test_site {protocol.test_site!r} has no subjects here (sites: {sorted(set(sites))})")
        test = sites == protocol.test_site
    else:
        if len(ids) < protocol.n_folds:  # too few to split (a single-file check): all train, and the run says so
            return dict.fromkeys(ids.tolist(), "train")
        counts = np.bincount(labels, minlength=2)
        folds = StratifiedKFold(protocol.n_folds, shuffle=True, random_state=protocol.seed)
        strat = labels if counts.min() >= protocol.n_folds else np.zeros_like(labels)
        test = np.zeros(len(ids), bool)
        test[list(folds.split(ids, strat))[protocol.fold][1]] = True
    rest = np.flatnonzero(~test)
    if len(rest) < 2:
        return {**dict.fromkeys(ids.tolist(), "train"), **dict.fromkeys(ids[test].tolist(), "test")}
    rest_labels = labels[rest]
    strat_rest = rest_labels if np.bincount(rest_labels, minlength=2).min() >= 2 else None
    n_val = max(1 if strat_rest is None else 2, round(protocol.val_fraction * len(rest)))  # stratified: both classes
    _, val = train_test_split(rest, test_size=n_val, random_state=protocol.seed, stratify=strat_rest)
    out = dict.fromkeys(ids.tolist(), "train")
    out.update(dict.fromkeys(ids[test].tolist(), "test"))
    out.update(dict.fromkeys(ids[val].tolist(), "val"))
    return out


@functools.lru_cache(maxsize=4)
def _split_table(folder: str, pheno: str, protocol_json: str) -> dict[str, str]:
    import json

    proto = AbideProtocol.from_mapping(json.loads(protocol_json))
    table = select_phenotypes(read_phenotypic(pheno), proto)
    present = {p.name.removesuffix(f"_{proto.atlas}.1D") for p in Path(folder).glob(f"*_{proto.atlas}.1D")}
    return assign_splits(table[table["FILE_ID"].isin(present)], proto)


def split_of(file_id: str, folder: Path, pheno: Path, protocol: AbideProtocol) -> str:
    """The split of one subject under the protocol (the same in every worker: computed from the table and the
    files present, once per process)."""
    import json

    keys = ("split", "n_folds", "fold", "test_site", "val_fraction", "seed", "subset", "max_mean_fd", "sites", "atlas")
    sub = json.dumps({k: _plain(getattr(protocol, k)) for k in keys}, sort_keys=True)
    return _split_table(str(folder), str(pheno), sub).get(file_id, "train")
