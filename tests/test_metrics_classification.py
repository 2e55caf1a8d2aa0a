"""Classification metrics against scikit-learn, per-subject values and subject-bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from biokd.metrics import classification_report, resample_weights
from biokd.metrics.classification import WeightedClassificationStats


def _fake(n: int, k: int, n_subjects: int, seed: int, skill: float = 1.0, subject_spread: float = 0.0):
    """Labels, softmax probabilities with some skill, and subject ids (skill varies by subject if asked)."""
    rng = np.random.default_rng(seed)
    subjects = rng.integers(0, n_subjects, n)
    y = rng.integers(0, k, n)
    subject_skill = skill + subject_spread * rng.normal(size=n_subjects)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += subject_skill[subjects]
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, prob, np.array([f"sub{s:03d}" for s in subjects])


def _sklearn(y, prob):
    pred = prob.argmax(axis=1)
    k = prob.shape[1]
    return {
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "cohen_kappa": skm.cohen_kappa_score(y, pred),
        "f1_weighted": skm.f1_score(y, pred, average="weighted"),
        "accuracy": skm.accuracy_score(y, pred),
        "auroc": skm.roc_auc_score(y, prob[:, 1]) if k == 2 else skm.roc_auc_score(y, prob, multi_class="ovr"),
    }


@pytest.mark.parametrize("k", [2, 4])
def test_point_metrics_equal_sklearn(k):
    y, prob, _ = _fake(600, k, 10, seed=k)
    out = classification_report(y, prob, n_boot=0)
    for name, value in _sklearn(y, prob).items():
        assert out[name] == value, name
    assert out["confusion_matrix"] == skm.confusion_matrix(y, prob.argmax(1)).tolist()
    assert out["n"] == 600 and "ci" not in out


def test_binary_accepts_positive_class_probability():
    y, prob, _ = _fake(300, 2, 5, seed=3)
    one_column = classification_report(y, prob[:, 1], n_boot=0)
    assert one_column["auroc"] == skm.roc_auc_score(y, prob[:, 1])
    assert one_column["balanced_accuracy"] == classification_report(y, prob, n_boot=0)["balanced_accuracy"]


def test_absent_class_is_left_out_of_auroc_and_named():
    y, prob, _ = _fake(400, 4, 5, seed=5)
    y[y == 2] = 0
    out = classification_report(y, prob, class_names=["a", "b", "c", "d"], n_boot=0)
    present = [skm.roc_auc_score(y == c, prob[:, c]) for c in (0, 1, 3)]
    assert out["auroc"] == pytest.approx(np.mean(present), abs=1e-15)
    assert out["auroc_per_class"]["c"] is None
    assert any("absent from y_true: c" in note for note in out["notes"])
    assert out["confusion_matrix"][2] == [0, 0, 0, 0]  # the row exists: labels are all classes


def test_per_subject_values_equal_sklearn_on_each_subject():
    y, prob, subjects = _fake(500, 4, 6, seed=7)
    out = classification_report(y, prob, subjects, n_boot=0)
    assert sorted(out["per_subject"]) == sorted(set(subjects))
    for s, values in out["per_subject"].items():
        mask = subjects == s
        assert values["n"] == mask.sum()
        for name, expected in _sklearn(y[mask], prob[mask]).items():
            assert values[name] == pytest.approx(expected, abs=1e-12), (s, name)


def test_weighted_resamples_equal_sklearn_on_expanded_data():
    y, prob, subjects = _fake(400, 4, 8, seed=11)
    stats = WeightedClassificationStats(y, prob)
    weights = next(resample_weights(len(y), subjects, n_boot=5, seed=3))
    values = stats(weights)
    for row in range(5):
        idx = np.repeat(np.arange(len(y)), weights[row].astype(int))
        for name, expected in _sklearn(y[idx], prob[idx]).items():
            assert values[name][row] == pytest.approx(expected, abs=1e-12), (row, name)


def test_binary_resample_auroc_handles_ties():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    p = np.round(np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, 300), 0, 1), 1)  # many ties
    weights = next(resample_weights(300, n_boot=3, seed=1))
    values = WeightedClassificationStats(y, np.stack([1 - p, p], 1))(weights)
    for row in range(3):
        idx = np.repeat(np.arange(300), weights[row].astype(int))
        assert values["auroc"][row] == pytest.approx(skm.roc_auc_score(y[idx], p[idx]), abs=1e-12)


def test_subject_bootstrap_draws_whole_subjects():
    _, _, subjects = _fake(300, 3, 7, seed=1)
    weights = next(resample_weights(300, subjects, n_boot=50, seed=0))
    for s in set(subjects):
        block = weights[:, subjects == s]
        assert np.all(block == block[:, :1])  # every sample of a subject shares its count
    assert weights.sum(axis=1).std() > 0  # resampling subjects changes the pooled size
    unique_draws = {tuple(row) for row in weights}
    assert len(unique_draws) > 40


def test_ci_contains_estimate_and_says_its_unit():
    y, prob, subjects = _fake(2000, 4, 30, seed=13)
    out = classification_report(y, prob, subjects, n_boot=300)
    assert out["ci_unit"] == "subject" and out["n_units"] == 30 and out["ci_level"] == 0.95
    assert out["ci_method"] == "percentile cluster bootstrap" and out["few_units"] is False and out["n_boot"] == 300
    for name in ("balanced_accuracy", "cohen_kappa", "f1_weighted", "accuracy", "auroc"):
        low, high = out["ci"][name]
        assert low < out[name] < high, name
    assert classification_report(y, prob, n_boot=50)["ci_unit"] == "sample"


def test_ci_narrows_with_more_subjects():
    widths = []
    for n_subjects in (5, 60):
        y, prob, subjects = _fake(60 * n_subjects, 4, n_subjects, seed=17, subject_spread=0.8)
        low, high = classification_report(y, prob, subjects, n_boot=300)["ci"]["balanced_accuracy"]
        widths.append(high - low)
    assert widths[1] < 0.6 * widths[0]


def test_one_subject_gives_no_ci_but_sample_bootstrap_does():
    y, prob, _ = _fake(400, 4, 1, seed=19)
    by_subject = classification_report(y, prob, ["only"] * 400, n_boot=100)
    assert by_subject["n_units"] == 1 and by_subject["few_units"] is True
    for name in ("balanced_accuracy", "accuracy", "auroc"):
        assert by_subject["ci"][name] == [None, None]  # no interval can rest on one subject
    assert any("rest on 1 subject only" in note for note in by_subject["notes"])
    by_sample = classification_report(y, prob, n_boot=100)
    assert by_sample["few_units"] is False and by_sample["ci_method"] == "percentile cluster bootstrap"
    low, high = by_sample["ci"]["balanced_accuracy"]
    assert high - low > 0.02


def test_subject_ci_wider_than_sample_ci_when_subjects_differ():
    y, prob, subjects = _fake(3000, 4, 12, seed=23, subject_spread=1.5)
    by_subject = classification_report(y, prob, subjects, n_boot=300)["ci"]["accuracy"]
    by_sample = classification_report(y, prob, n_boot=300)["ci"]["accuracy"]
    assert by_subject[1] - by_subject[0] > 1.5 * (by_sample[1] - by_sample[0])


def test_bootstrap_is_reproducible_from_seed():
    y, prob, subjects = _fake(800, 4, 25, seed=29)
    a = classification_report(y, prob, subjects, n_boot=100, seed=4)["ci"]
    b = classification_report(y, prob, subjects, n_boot=100, seed=4)["ci"]
    c = classification_report(y, prob, subjects, n_boot=100, seed=5)["ci"]
    assert a == b and a != c
    y, prob, subjects = _fake(500, 4, 8, seed=29)  # few subjects: the jackknife draws nothing at random
    jackknife = [classification_report(y, prob, subjects, seed=seed)["ci"] for seed in (4, 5)]
    assert jackknife[0] == jackknife[1]


def test_bad_inputs_are_refused():
    y, prob, _ = _fake(50, 3, 2, seed=31)
    with pytest.raises(ValueError, match="softmax"):
        classification_report(y, np.log(prob), n_boot=0)
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        classification_report(np.full(50, 3), prob, n_boot=0)
    with pytest.raises(ValueError, match="subjects has 3 entries"):
        classification_report(y, prob, ["a", "b", "c"], n_boot=0)
