"""ABIDE into the store: survey the release, apply the bad-ROI policy, build per-subject connectivity shards."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .._io import write_json
from ..data.store import BuildReport, build_store
from ..errors import DataError
from .abide import AbideProtocol, plan_roi_exclusion, process_subject, read_roi_timeseries, survey


def first_labels(subjects: dict[str, list[Path]], protocol: AbideProtocol) -> list[str]:
    """ROI labels of the first readable file, after the protocol's exclusions."""
    errors = []
    for paths in subjects.values():
        try:
            _, labels = read_roi_timeseries(paths[0], protocol.rois)
        except DataError as err:
            errors.append(str(err))
            continue
        return [lab for lab in labels if lab not in set(protocol.excluded_rois)]
    raise DataError(None, f"no readable ROI file among {len(subjects)} subjects ({'; '.join(errors[:3])})")


def preprocess_abide(
    root: str | Path,
    out: str | Path,
    protocol: AbideProtocol | None = None,
    phenotypic: str | Path | None = None,
    *,
    jobs: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
) -> BuildReport:
    """Write ``out`` (protocol.json, manifest.csv with subject/site/label/age/sex/split, shards of ``fc`` and, for
    group stages, ``timeseries``) and ``survey.json`` (subjects found, filtered out, missing, not in the table)."""
    protocol = protocol or AbideProtocol()
    found = survey(root, protocol, phenotypic)
    if protocol.bad_roi == "drop_roi":
        readable = {}
        for s, p in found.subjects.items():
            try:
                read_roi_timeseries(p[0], protocol.rois)
            except DataError:
                if not skip_bad:
                    raise
                continue
            readable[s] = p
        protocol = plan_roi_exclusion(readable, protocol)
    labels = first_labels(found.subjects, protocol)
    spec = protocol.spec(labels)
    out = Path(out)
    report = build_store(
        out, found.subjects, process_subject, protocol.to_dict(), spec, jobs=jobs, skip_bad=skip_bad, progress=progress
    )
    record: dict[str, Any] = {
        "layout": found.layout,
        "folder": str(found.folder),
        "phenotypic": str(found.phenotypic),
        "counts": found.counts,
        "missing_files": found.missing_files,
        "not_in_table": found.not_in_table,
        "excluded_by_filters": found.excluded,
        "protocol": dataclasses.asdict(protocol),
    }
    write_json(out / "survey.json", record)
    return report
