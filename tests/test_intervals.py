"""Intervals over few and many units: coverage on simulated data, the jackknife by hand, paired differences.

Coverage tolerance (stated in issue 13's terms): the measured coverage of a nominal 95% interval lies within
±0.04 of 0.95 (about 3 Monte-Carlo standard errors at 400 replications), for 5 and for 40 units.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from biokd.metrics.bootstrap import JACKKNIFE_T, PERCENTILE, bootstrap_ci, t_interval, unit_values_t_interval
from biokd.metrics.classification import classification_report, paired_difference_ci

TOLERANCE = 0.04
TRUE_MEAN = 0.7  # population mean of the units' success rates: Beta(14, 6)


def _units(rng: np.random.Generator, n_units: int, per_unit: int) -> tuple[np.ndarray, np.ndarray]:
    """0/1 outcomes of ``per_unit`` trials per unit, each unit with its own rate; and the unit of each trial."""
    rate = rng.beta(14, 6, size=n_units)  # SD ≈ 0.1 between units
    outcome = (rng.random((n_units, per_unit)) < rate[:, None]).astype(np.float64).ravel()
    return outcome, np.repeat(np.arange(n_units), per_unit)


def _coverage(n_units: int, method: str, reps: int = 400, per_unit: int = 10, seed: int = 0) -> tuple[float, str]:
    rng = np.random.default_rng(seed)
    hits, used = 0, ""
    for rep in range(reps):
        outcome, units = _units(rng, n_units, per_unit)
        out = bootstrap_ci(
            lambda w, x=outcome: {"mean": (w @ x) / w.sum(axis=1)},
            len(outcome),
            units,
            n_boot=400,
            seed=rep,
            method=method,
            bounds={"mean": (0.0, 1.0)},
        )
        low, high = out["ci"]["mean"]
        hits += low <= TRUE_MEAN <= high
        used = out["ci_method"]
    return hits / reps, used


def test_coverage_with_few_units_holds_where_the_percentile_bootstrap_does_not():
    coverage, method = _coverage(5, "auto")
    assert method == JACKKNIFE_T
    assert abs(coverage - 0.95) <= TOLERANCE, coverage
    percentile, _ = _coverage(5, "percentile")
    assert percentile < 0.95 - TOLERANCE, percentile  # the interval the report used before: it collapses


def test_coverage_with_many_units():
    coverage, method = _coverage(40, "auto", reps=400, per_unit=5, seed=1)
    assert method == PERCENTILE
    assert abs(coverage - 0.95) <= TOLERANCE, coverage


def test_classification_report_coverage_with_five_subjects():
    """Balanced accuracy over 5 subjects of equal size: the truth is the population mean skill (0.7)."""
    rng = np.random.default_rng(3)
    hits = {"accuracy": 0, "balanced_accuracy": 0}
    reps = 200
    for _ in range(reps):
        correct, units = _units(rng, 5, 40)
        y = rng.integers(0, 2, len(correct))
        pred = np.where(correct == 1, y, 1 - y)
        prob = np.where(pred == 1, 0.8, 0.2)
        out = classification_report(y, prob, units, n_boot=100)
        assert out["few_units"] and out["n_units"] == 5 and out["ci_unit"] == "subject"
        for name in hits:
            low, high = out["ci"][name]
            hits[name] += low <= TRUE_MEAN <= high
    for name, hit in hits.items():
        assert abs(hit / reps - 0.95) <= 0.05, (name, hit / reps)  # 200 replications: ±0.05


def test_jackknife_t_by_hand_with_unequal_subjects():
    """Leave-one-subject-out accuracies from scikit-learn, the t quantile from scipy."""
    rng = np.random.default_rng(5)
    sizes = [30, 50, 20, 70]
    subjects = np.repeat(["s1", "s2", "s3", "s4"], sizes)
    y = rng.integers(0, 3, len(subjects))
    prob = rng.dirichlet(np.ones(3), len(subjects))
    prob[np.arange(len(y)), y] += 0.4 * (subjects == "s2")  # one subject much easier
    prob /= prob.sum(axis=1, keepdims=True)
    out = classification_report(y, prob, subjects, n_boot=50)
    assert out["ci_method"] == JACKKNIFE_T and out["n_boot"] == 0
    pred = prob.argmax(axis=1)
    full = skm.accuracy_score(y, pred)
    loo = np.array([skm.accuracy_score(y[subjects != s], pred[subjects != s]) for s in ["s1", "s2", "s3", "s4"]])
    se = np.sqrt(3 / 4 * np.sum((loo - loo.mean()) ** 2))
    half = stats.t.ppf(0.975, df=3) * se
    assert out["ci"]["accuracy"] == pytest.approx([max(full - half, 0.0), min(full + half, 1.0)], abs=1e-12)
    assert out["ci"]["accuracy"][0] < loo.min() - 0.01  # wider than the extreme subjects, not collapsed on them


def test_t_interval_of_unit_values_is_the_textbook_one():
    values = np.array([0.61, 0.72, 0.55, 0.80, 0.66])
    expected = stats.t.interval(0.95, df=4, loc=values.mean(), scale=stats.sem(values))
    assert unit_values_t_interval(values) == pytest.approx(list(expected), abs=1e-12)
    assert unit_values_t_interval([0.5]) == [None, None]
    assert t_interval(0.5, np.array([0.4, np.nan, 0.6])) == [None, None]
    assert t_interval(0.5, np.array([0.0, 1.0]), bounds=(0.0, 1.0)) == [0.0, 1.0]


def _two_models(rng: np.random.Generator, n_subjects: int, per_subject: int, gain: float):
    """Model a and b share each subject's difficulty (large spread); a is right ``gain`` more often."""
    subjects = np.repeat(np.arange(n_subjects), per_subject)
    skill = np.clip(rng.normal(0.65, 0.15, n_subjects), 0.3, 0.95 - gain)
    u = rng.random(len(subjects))  # shared draw: a is right whenever b is, and a bit more
    right_b = u < skill[subjects]
    right_a = u < skill[subjects] + gain
    y = rng.integers(0, 2, len(subjects))
    prob = [np.where(np.where(right, y, 1 - y) == 1, 0.9, 0.1) for right in (right_a, right_b)]
    return y, prob[0], prob[1], subjects


def test_paired_difference_is_narrow_where_unpaired_intervals_overlap():
    y, prob_a, prob_b, subjects = _two_models(np.random.default_rng(7), 6, 100, gain=0.06)
    out = paired_difference_ci(["accuracy", "balanced_accuracy"], y, prob_a, prob_b, subjects)
    assert out["n_units"] == 6 and out["ci_unit"] == "subject" and out["few_units"] is True
    assert out["ci_method"] == JACKKNIFE_T and out["notes"]
    a = classification_report(y, prob_a, subjects, n_boot=0)
    b = classification_report(y, prob_b, subjects, n_boot=0)
    assert out["difference"]["accuracy"] == pytest.approx(a["accuracy"] - b["accuracy"], abs=1e-12)
    assert out["a"]["balanced_accuracy"] == pytest.approx(a["balanced_accuracy"], abs=1e-12)
    low, high = out["ci"]["accuracy"]
    assert 0 < low < out["difference"]["accuracy"] < high  # a is better on every subject: the interval says so
    alone = classification_report(y, prob_a, subjects)["ci"]["accuracy"]
    assert high - low < 0.5 * (alone[1] - alone[0])  # shared subject spread cancels in the pairing


def test_paired_difference_coverage_with_six_subjects():
    rng = np.random.default_rng(11)
    hits, reps = 0, 200
    for _ in range(reps):
        y, prob_a, prob_b, subjects = _two_models(rng, 6, 30, gain=0.05)
        low, high = paired_difference_ci("accuracy", y, prob_a, prob_b, subjects)["ci"]["accuracy"]
        hits += low <= 0.05 <= high
    assert abs(hits / reps - 0.95) <= 0.05, hits / reps


def test_paired_difference_refuses_mismatched_inputs():
    y, prob_a, prob_b, subjects = _two_models(np.random.default_rng(1), 3, 10, gain=0.1)
    with pytest.raises(ValueError, match="unknown metric"):
        paired_difference_ci("rmse", y, prob_a, prob_b, subjects)
    with pytest.raises(ValueError, match="must be"):
        paired_difference_ci("accuracy", y, prob_a, prob_b[:-1], subjects)
    with pytest.raises(ValueError, match="subjects has 2 entries"):
        paired_difference_ci("accuracy", y, prob_a, prob_b, ["a", "b"])
