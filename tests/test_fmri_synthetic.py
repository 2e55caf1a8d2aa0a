"""Generated ABIDE-like release: read back by the reader; the planted difference is learnable across subjects."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biokd.fmri.abide import AbideProtocol, process_subject, read_phenotypic, survey
from biokd.fmri.synthetic import write_synthetic_abide


def test_generated_release_reads_back_and_is_learnable(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    gen = write_synthetic_abide(
        tmp_path, n_sites=4, subjects_per_site=16, atlas="rois_aal", n_planted=8, effect=1.5, seed=0
    )
    protocol = AbideProtocol(atlas="rois_aal")
    info = survey(tmp_path, protocol)
    assert info.layout == "pcp" and info.counts["subjects"] == 64 and info.counts["table_rows"] == 68
    table = read_phenotypic(gen.phenotypic)
    assert (table["FILE_ID"] == "no_filename").sum() == 4 and table["SITE_ID"].nunique() == 4
    assert len(set(s["n_timepoints"] for s in gen.sites.values())) > 1  # time points differ by site

    iu = np.triu_indices(116, k=1)
    features, labels, sites = [], [], []
    for subject, paths in info.subjects.items():
        items = process_subject(subject, paths, protocol)
        assert items.arrays["fc"].shape == (1, 116, 116)
        features.append(items.arrays["fc"][0][iu])
        labels.append(items.rows[0]["label"])
        sites.append(items.rows[0]["site"])
    x, y = np.stack(features), np.asarray(labels)
    assert y.mean() == 0.5
    planted = np.mean(
        [x[y == 1][:, _edge_index(a, b)].mean() - x[y == 0][:, _edge_index(a, b)].mean() for a, b in gen.planted_edges]
    )
    assert planted > 0.1
    # held-out subjects: one row per subject, so folds are disjoint by subject
    cv = StratifiedKFold(n_splits=4, shuffle=True, random_state=0)
    scores = cross_val_score(
        LogisticRegression(C=0.01, max_iter=2000),
        x,
        y,
        cv=cv,
    )
    assert scores.mean() > 0.7, scores


def _edge_index(a: int, b: int, n: int = 116) -> int:
    iu = np.triu_indices(n, k=1)
    return int(np.flatnonzero((iu[0] == a) & (iu[1] == b))[0])
