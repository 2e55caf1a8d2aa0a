"""Connectivity through nilearn: Pearson on the real file, partial correlation, tangent fitted on training
subjects only, ComBat fitted on training sites, state saved and reloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biokd.errors import ConfigError
from biokd.fmri.abide import read_roi_timeseries
from biokd.fmri.connectivity import (
    GroupState,
    apply_group_stage,
    fisher_z,
    fit_group_stage,
    subject_connectivity,
)


def _series(n: int, rois: int = 12, seed: int = 0, shift: float = 0.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((rois, rois)) * 0.4 + np.eye(rois)
    return [rng.standard_normal((int(rng.integers(60, 90)), rois)) @ mix + shift for _ in range(n)]


def test_real_file_correlation_is_pearson(real_data: Path) -> None:
    ts, _ = read_roi_timeseries(real_data / "abide" / "Caltech_0051456_rois_aal.1D", 116)
    assert ts.shape == (145, 116)
    fc = subject_connectivity(ts, "correlation", "empirical")
    np.testing.assert_allclose(fc, np.corrcoef(ts, rowvar=False), atol=1e-10)
    shrunk = subject_connectivity(ts, "correlation", "ledoit_wolf")  # what nilearn's default estimator does
    off = ~np.eye(116, dtype=bool)
    assert np.abs(shrunk[off]).mean() < np.abs(fc[off]).mean()


def test_partial_correlation_and_fisher() -> None:
    ts = _series(1, seed=1)[0]
    pc = subject_connectivity(ts, "partial correlation")
    prec = np.linalg.inv(np.cov(ts, rowvar=False))
    d = np.sqrt(np.diag(prec))
    expected = -prec / np.outer(d, d)
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_allclose(pc, expected, atol=1e-8)
    z = subject_connectivity(ts, "correlation", fisher=True)
    r = np.corrcoef(ts, rowvar=False)
    np.testing.assert_allclose(z[0, 1], np.arctanh(r[0, 1]))
    assert np.all(np.diag(z) == 0) and np.isfinite(fisher_z(np.ones((3, 3)))).all()


def test_tangent_reference_from_training_subjects_only(tmp_path: Path) -> None:
    train, test = _series(8, seed=2), _series(4, seed=3, shift=0.0)
    state = fit_group_stage(train, "tangent")
    before = state.tangent_mean.copy()
    out_test = apply_group_stage(state, test)
    np.testing.assert_array_equal(state.tangent_mean, before)  # applying never refits
    # a test subject cannot change the reference: different test sets give identical train outputs
    other = [t * 3.0 + 1 for t in _series(4, seed=9)]
    with_test = apply_group_stage(state, train + test)[:8]
    with_other = apply_group_stage(state, train + other)[:8]
    np.testing.assert_allclose(with_test, with_other, atol=1e-12)
    # and the reference differs from one fitted with the test subjects in (so leakage would be visible)
    leaky = fit_group_stage(train + test, "tangent")
    assert np.abs(leaky.tangent_mean - state.tangent_mean).max() > 1e-3
    # single subject transform = its row in a group transform; reloaded state gives the same numbers
    np.testing.assert_allclose(apply_group_stage(state, test[:1])[0], out_test[0], atol=1e-10)
    state.save(tmp_path)
    again = GroupState.load(tmp_path)
    np.testing.assert_allclose(apply_group_stage(again, test), out_test, atol=1e-12)
    from nilearn.connectome import ConnectivityMeasure
    from sklearn.covariance import EmpiricalCovariance

    direct = ConnectivityMeasure(kind="tangent", cov_estimator=EmpiricalCovariance()).fit(train).transform(test)
    np.testing.assert_allclose(out_test, direct, atol=1e-10)


def test_combat_fitted_on_training_sites(tmp_path: Path) -> None:
    sites = ["a"] * 6 + ["b"] * 6 + ["c"] * 6
    series = _series(6, seed=4) + _series(6, seed=5) + _series(6, seed=6)
    series = [
        ts + (0.8 * np.random.default_rng(i).standard_normal(12) if s == "b" else 0)
        for i, (ts, s) in enumerate(zip(series, sites, strict=True))
    ]
    state = fit_group_stage(series, "correlation", combat=True, train_sites=sites)
    harmonised = apply_group_stage(state, series, sites)
    assert harmonised.shape == (18, 12, 12)
    np.testing.assert_allclose(harmonised, harmonised.transpose(0, 2, 1))
    # per-row adjustment: a subset holding only site "b" gets the same values as in the full batch
    np.testing.assert_allclose(apply_group_stage(state, series[6:8], ["b", "b"]), harmonised[6:8], atol=1e-8)
    raw = apply_group_stage(GroupState("correlation", "empirical", False, 12, 18), series)
    site_means = [raw[i : i + 6].mean(0) for i in (0, 6, 12)]
    harm_means = [harmonised[i : i + 6].mean(0) for i in (0, 6, 12)]
    spread = lambda ms: np.abs(ms[0] - ms[1]).mean() + np.abs(ms[1] - ms[2]).mean()  # noqa: E731
    assert spread(harm_means) < spread(site_means)
    state.save(tmp_path)
    np.testing.assert_allclose(apply_group_stage(GroupState.load(tmp_path), series, sites), harmonised, atol=1e-10)
    with pytest.raises(ConfigError, match="no training subjects"):
        apply_group_stage(state, series[:1], ["unseen"])
