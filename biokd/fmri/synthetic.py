"""Generated ABIDE-like sites written as real ``.1D`` files and a real-format phenotypic CSV.

GENERATED DATA: a low-rank network model of ROI time series with site effects (scanner gain and offset, noise
level, number of time points) and a planted group difference (one shared signal added to a few ROIs in the
autism group, raising the connections among them). For demos and tests only, never a substitute for ABIDE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_path, write_text
from .abide import ATLAS_ROIS, PHENOTYPIC_FILE

SITE_NAMES = ("SITE_A", "SITE_B", "SITE_C", "SITE_D", "SITE_E", "SITE_F", "SITE_G", "SITE_H", "SITE_I", "SITE_J")


@dataclass
class SyntheticAbide:
    """Where the generated release lies and what was planted."""

    root: Path
    phenotypic: Path
    files: dict[str, Path]
    planted_edges: list[tuple[int, int]]
    sites: dict[str, dict[str, float]] = field(default_factory=dict)


def roi_path(root: Path, file_id: str, atlas: str, pipeline: str, strategy: str, layout: str) -> Path:
    """Where a ``.1D`` file sits in the nilearn or PCP layout."""
    name = f"{file_id}_{atlas}.1D"
    if layout == "nilearn":
        return root / "ABIDE_pcp" / pipeline / strategy / name
    if layout == "pcp":
        return root / "Outputs" / pipeline / strategy / atlas / name
    raise ValueError(f"layout must be 'nilearn' or 'pcp'; got {layout!r}")


def write_roi_file(path: str | Path, timeseries: np.ndarray, labels: Sequence[str] | None = None) -> Path:
    """A ``.1D`` file as the release writes it: ``#label`` header (tab-separated, trailing tab), tab rows."""
    labels = labels if labels is not None else [str(i + 1) for i in range(timeseries.shape[1])]
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write("\t".join(f"#{lab}" for lab in labels) + "\t\n")
        np.savetxt(fh, timeseries, fmt="%.6f", delimiter="\t")
    return Path(path)


def phenotypic_frame(rows: list[dict]) -> pd.DataFrame:
    """A table with the release's leading columns, missing values coded -9999 as in the release."""
    frame = pd.DataFrame(rows)
    frame.insert(0, "Unnamed: 0", np.arange(1, len(frame) + 1))
    return frame.fillna(-9999)


def _network_loadings(rng: np.random.Generator, n_rois: int, n_networks: int) -> np.ndarray:
    membership = rng.integers(0, n_networks, n_rois)
    loadings = np.zeros((n_rois, n_networks))
    loadings[np.arange(n_rois), membership] = rng.uniform(0.6, 1.0, n_rois)
    return loadings + 0.1 * rng.standard_normal((n_rois, n_networks))


def write_synthetic_abide(
    root: str | Path,
    n_sites: int = 6,
    subjects_per_site: int = 20,
    atlas: str = "rois_cc200",
    n_rois: int | None = None,
    pipeline: str = "cpac",
    strategy: str = "filt_noglobal",
    layout: str = "pcp",
    n_planted: int = 8,
    effect: float = 1.0,
    n_no_filename: int = 1,
    seed: int = 0,
) -> SyntheticAbide:
    """Write ``n_sites`` x ``subjects_per_site`` subjects (half autism, alternating) plus the phenotypic CSV."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    n_rois = n_rois or ATLAS_ROIS[atlas]
    if n_sites > len(SITE_NAMES):
        raise ValueError(f"at most {len(SITE_NAMES)} generated sites")
    loadings = _network_loadings(rng, n_rois, n_networks=7)
    # the planted difference: n_planted ROIs share one extra signal in the autism group (their pairwise edges)
    planted_rois = sorted(map(int, rng.choice(n_rois, size=min(n_planted, n_rois), replace=False)))
    planted = [(a, b) for i, a in enumerate(planted_rois) for b in planted_rois[i + 1 :]]
    labels = [str(2000 + i + 1) for i in range(n_rois)]
    files: dict[str, Path] = {}
    rows: list[dict] = []
    sites: dict[str, dict[str, float]] = {}
    sub_id = 50001
    for s in range(n_sites):
        site = SITE_NAMES[s]
        prefix = site.title().replace("_", "")
        spec = {
            "gain": float(rng.uniform(3000, 10000)),
            "noise": float(rng.uniform(0.6, 1.4)),
            "n_timepoints": int(rng.choice([120, 146, 176, 196, 236, 296])),
        }
        sites[site] = spec
        site_mix = 0.3 * rng.standard_normal(loadings.shape)  # scanner/site-specific network structure
        for k in range(subjects_per_site + n_no_filename):
            sub_id += 1
            dx = 1 if k % 2 == 0 else 2
            qc = "OK" if rng.random() > 0.1 else "fail"
            row = {
                "SUB_ID": sub_id,
                "X": sub_id - 50001,
                "subject": sub_id,
                "SITE_ID": site,
                "FILE_ID": f"{prefix}_00{sub_id}",
                "DX_GROUP": dx,
                "DSM_IV_TR": int(rng.integers(1, 4)) if dx == 1 else 0,
                "AGE_AT_SCAN": round(float(rng.uniform(7, 40)), 2),
                "SEX": 1 if rng.random() < 0.8 else 2,
                "FIQ": int(rng.integers(80, 130)) if rng.random() > 0.2 else None,
                "func_mean_fd": round(float(rng.gamma(2.0, 0.05)), 6),
                "func_num_fd": int(rng.integers(0, 60)),
                "func_perc_fd": round(float(rng.uniform(0, 30)), 4),
                "qc_rater_1": qc,
                "qc_anat_rater_2": "OK",
                "qc_func_rater_2": rng.choice(["OK", "maybe"]),
                "qc_anat_rater_3": "OK",
                "qc_func_rater_3": "OK",
                "SUB_IN_SMP": 1,
            }
            if k >= subjects_per_site:
                row["FILE_ID"] = "no_filename"
                rows.append(row)
                continue
            rows.append(row)
            T = spec["n_timepoints"]
            load = loadings + site_mix + 0.15 * rng.standard_normal(loadings.shape)
            x = rng.standard_normal((T, load.shape[1])) @ load.T + spec["noise"] * rng.standard_normal((T, n_rois))
            if dx == 1:
                x[:, planted_rois] += effect * rng.standard_normal((T, 1))
            x = spec["gain"] * (1.0 + 0.05 * x) + rng.uniform(-200, 200, n_rois)
            path = roi_path(root, row["FILE_ID"], atlas, pipeline, strategy, layout)
            files[row["FILE_ID"]] = write_roi_file(path, x, labels)
    pheno_dir = root / "ABIDE_pcp" if layout == "nilearn" else root
    pheno = pheno_dir / PHENOTYPIC_FILE
    write_text(pheno, phenotypic_frame(rows).to_csv(index=False))
    return SyntheticAbide(root, pheno, files, planted, sites)
