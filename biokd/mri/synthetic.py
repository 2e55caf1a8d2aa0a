"""Generated OASIS-3-like subjects: T1w MRI and amyloid PET SUVR from nilearn's MNI152 template, real formats.

NOT real data. Every subject is the same averaged brain (nilearn's MNI152 2009a template, shipped in its wheel),
downsampled, with a subject-specific intensity scale, shift, bias field and noise. Amyloid status drives both
images: amyloid-positive subjects get grey-matter loss around the medial temporal lobes and a little
everywhere (atrophy, in the MRI), and cortical tracer uptake on top of the white-matter binding every amyloid
scan shows (in the PET). The files are written as NIfTI in the OASIS-3 layouts with tables in the release's
format, so they go through exactly the loader real data go through. For demos and tests only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._io import atomic_path, write_text
from .oasis3 import CENTILOID_TABLE, CLINICAL_TABLE, DEFAULT_THRESHOLDS, PUP_TABLE

# Centiloid = a·SUVR + b per tracer (reference notes, unconfirmed); used to write a consistent PUP SUVR column.
_CL_FROM_SUVR = {"PIB": (45.0, -47.5), "AV45": (53.6, -43.2)}
# Medial temporal lobes in MNI mm (hippocampus/entorhinal, approximate), where the atrophy is strongest.
_ATROPHY_CENTRES_MM = ((-26.0, -22.0, -14.0), (26.0, -22.0, -14.0))


@dataclass(frozen=True)
class SyntheticSubject:
    subject: str
    tracer: str
    centiloid: float
    label: int
    mr_days: tuple[int, ...]
    pet_days: int


def _templates(voxel_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from nilearn.datasets import load_mni152_gm_template, load_mni152_template, load_mni152_wm_template
    from scipy.ndimage import zoom

    t1 = load_mni152_template(resolution=2)
    factor = 2.0 / voxel_mm
    vols = [
        zoom(np.asarray(img.get_fdata(), dtype=np.float32), factor, order=1)
        for img in (t1, load_mni152_gm_template(resolution=2), load_mni152_wm_template(resolution=2))
    ]
    affine = t1.affine.copy()
    affine[:3, :3] = np.diag([voxel_mm] * 3)
    return vols[0], vols[1], vols[2], affine


def _mm_grid(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(np.float32)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(tmp.with_suffix(".nii.gz")))
        tmp.with_suffix(".nii.gz").replace(tmp)


def write_synthetic_oasis3(
    root: str | Path,
    n_subjects: int = 20,
    seed: int = 0,
    voxel_mm: float = 6.0,
    layout: Literal["download", "bids"] = "download",
    positive_fraction: float = 0.45,
    missing_pet_volume: int = 1,
    unmatched_visit: bool = True,
) -> list[SyntheticSubject]:
    """Write ``n_subjects`` generated subjects under ``root`` (NIfTI + the three tables); return what was drawn.

    ``missing_pet_volume`` subjects get no SUVR map (the loader's optional-PET path); with ``unmatched_visit``
    the first subject gets an extra MR session 900 days after its PET (no PET within ±365 days).
    """
    from scipy.ndimage import gaussian_filter

    root = Path(root)
    rng = np.random.default_rng(seed)
    t1, gm, wm, affine = _templates(voxel_mm)
    mm = _mm_grid(t1.shape, affine)
    mtl = sum(np.exp(-((mm - np.array(c)) ** 2).sum(-1) / (2 * 14.0**2)) for c in _ATROPHY_CENTRES_MM)
    subjects: list[SyntheticSubject] = []
    centiloid_rows, pup_rows, clinical_rows = [], [], []
    for i in range(n_subjects):
        sid = f"OAS3{i + 1:04d}"
        tracer = "AV45" if rng.random() < 0.5 else "PIB"
        positive = rng.random() < positive_fraction
        threshold = DEFAULT_THRESHOLDS[tracer]
        centiloid = float(rng.uniform(threshold + 5, 110) if positive else rng.uniform(-20, threshold - 5))
        load = max(centiloid, 0.0) / 100.0
        pet_days = int(rng.integers(0, 2000))
        mr_days = [max(0, pet_days + int(rng.integers(-300, 300)))]
        if rng.random() < 0.5:
            mr_days.append(min(mr_days[0] + int(rng.integers(400, 700)), pet_days + 365))
        if unmatched_visit and i == 0:
            mr_days.append(pet_days + 900)
        mr_days = sorted(set(mr_days))
        scale, shift = rng.uniform(0.8, 1.2), rng.integers(-1, 2, size=3)
        field = gaussian_filter(rng.standard_normal(t1.shape), 4)
        bias = 1 + 0.05 * field / field.std()
        for days in mr_days:
            years = max(days - pet_days, 0) / 365.0
            atrophy = (0.45 * load + 0.03 * years) * gm * (0.25 + mtl) + 0.05 * rng.random()
            img = t1 * (1 - np.clip(atrophy, 0, 0.9)) * scale * bias
            img = np.roll(img, tuple(shift), axis=(0, 1, 2)) + 0.02 * rng.standard_normal(t1.shape)
            name = f"sub-{sid}_ses-d{days:04d}_run-01_T1w.nii.gz"
            if layout == "download":
                path = root / f"{sid}_MR_d{days:04d}" / "anat1" / name
            else:
                path = root / f"sub-{sid}" / f"ses-d{days:04d}" / "anat" / name
            _save_nifti(path, np.clip(img, 0, None), affine)
            clinical_rows.append(
                (sid, f"{sid}_UDSb4_d{days:04d}", days, 0.5 if positive and rng.random() < 0.6 else 0.0, positive)
            )
        a, b = _CL_FROM_SUVR[tracer]
        suvr = (centiloid - b) / a
        if i >= missing_pet_volume:
            uptake = 0.7 + 0.6 * wm + gm * (0.15 + 1.3 * load * (0.5 + 0.5 * (1 - mtl)))
            pet = gaussian_filter(uptake, 1.0) * (t1 > 0.05) + 0.03 * rng.standard_normal(t1.shape)
            folder = root / f"{sid}_{tracer}_PUPTIMECOURSE_d{pet_days:04d}" / "pet_proc"
            _save_nifti(folder / f"{sid}_{tracer}_d{pet_days:04d}n_msum_SUVR.nii.gz", pet, affine)
        centiloid_rows.append((sid, f"{sid}_{tracer}_d{pet_days:04d}", tracer, centiloid))
        pup_rows.append((f"{sid}_{tracer}_PUPTIMECOURSE_d{pet_days:04d}", tracer, f"{sid}_MR_d{mr_days[0]:04d}", suvr))
        subjects.append(SyntheticSubject(sid, tracer, centiloid, int(positive), tuple(mr_days), pet_days))
    write_tables(root / "tables", centiloid_rows, pup_rows, clinical_rows, rng)
    return subjects


def write_tables(
    folder: Path, centiloid_rows: list[tuple], pup_rows: list[tuple], clinical_rows: list[tuple], rng: Any
) -> None:
    """The three tables with the release's file names, key columns and value columns."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    columns = ["subject_id", "oasis_session_id", "tracer", "Centiloid_fSUVR_rsf_TOT_CORTMEAN"]
    cl = pd.DataFrame(centiloid_rows, columns=columns)
    cl["Centiloid_fSUVR_TOT_CORTMEAN"] = cl["Centiloid_fSUVR_rsf_TOT_CORTMEAN"] * 0.8
    write_text(folder / CENTILOID_TABLE, cl.to_csv(index=False))
    pup = pd.DataFrame(pup_rows, columns=["PUP_PUPTIMECOURSEDATA ID", "tracer", "MRId", "PET_fSUVR_rsf_TOT_CORTMEAN"])
    write_text(folder / PUP_TABLE, pup.to_csv(index=False))
    clinical = pd.DataFrame(
        [
            {
                "OASISID": sid,
                "OASIS_session_label": label,
                "days_to_visit": days,
                "MMSE": int(np.clip(29 - 4 * cdr - rng.integers(0, 2), 0, 30)),
                "CDRTOT": cdr,
                "CDRSUM": cdr * 2,
                "dx1": "Cognitively normal" if cdr == 0 else "uncertain dementia",
            }
            for sid, label, days, cdr, _ in clinical_rows
        ]
    )
    write_text(folder / CLINICAL_TABLE, clinical.to_csv(index=False))
