"""Clinical classification metrics with per-subject values and subject-bootstrap confidence intervals.

Pooled point estimates come straight from scikit-learn. Per-subject values and bootstrap resamples are
scored from weighted confusion matrices and a weighted rank statistic for AUROC (written here: scikit-learn
scores one subset per call, too slow for 1000 resamples); tests check them against scikit-learn.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import sparse
from sklearn import metrics as skm

from .bootstrap import CHUNK, FEW_UNITS, bootstrap_ci

SCALAR_METRICS = ("balanced_accuracy", "cohen_kappa", "f1_weighted", "accuracy", "auroc")
#: The range of each metric: a t-interval is clipped to it.
BOUNDS = {"balanced_accuracy": (0.0, 1.0), "cohen_kappa": (-1.0, 1.0), "f1_weighted": (0.0, 1.0),
          "accuracy": (0.0, 1.0), "auroc": (0.0, 1.0)}  # fmt: skip


def classification_report(
    y_true: Sequence[int] | np.ndarray,
    y_prob: np.ndarray,
    subjects: Sequence[Any] | np.ndarray | None = None,
    *,
    class_names: Sequence[str] | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Balanced accuracy, Cohen's κ, weighted F1, accuracy, AUROC, confusion matrix, per-subject values, CIs.

    ``y_prob`` is ``(n, K)`` class probabilities, or ``(n,)`` positive-class probabilities for a binary task.
    The prediction is the most probable class (ties go to the lower class). AUROC is the positive-class
    AUROC for two classes, else one-vs-rest averaged (macro) over the classes present in ``y_true`` (a class
    without positives has no AUROC; the ones left out are named in ``notes``). Undefined values are ``None``.

    Intervals: the block of :mod:`biokd.metrics.bootstrap` — ``ci: {metric: [low, high]}``, ``ci_level``,
    ``ci_unit`` (``"subject"``, or ``"sample"`` without ``subjects``), ``n_units``, ``ci_method``,
    ``few_units``, ``n_boot``. With 20 or more units a percentile bootstrap over ``n_boot`` resamples of
    subjects (each drawn subject brings all its samples); with fewer a jackknife-t interval over subjects
    (which does not collapse onto the extreme subjects); below 10 ``few_units`` is True and ``notes`` warns.
    """
    y, prob = _check_inputs(y_true, y_prob)
    n, k = prob.shape
    names = [str(c) for c in (class_names if class_names is not None else range(k))]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names for {k} classes")
    pred = np.argmax(prob, axis=1)

    per_class = _auroc_per_class(y, prob)
    out: dict[str, Any] = {"n": n, "n_classes": k, "class_names": names}
    out.update(_point_metrics(y, pred, per_class))
    out["auroc_average"] = "binary" if k == 2 else "ovr-macro"
    out["auroc_per_class"] = {names[c]: v for c, v in enumerate(per_class)} if k > 2 else None
    out["confusion_matrix"] = skm.confusion_matrix(y, pred, labels=np.arange(k)).tolist()
    notes = []
    absent = [names[c] for c in range(k) if not np.any(y == c)]
    if absent:
        notes.append(f"classes absent from y_true: {', '.join(absent)}")
        if k > 2:
            notes.append("auroc is the one-vs-rest macro average over the classes present in y_true only")
    if out["auroc"] is None:
        notes.append("auroc undefined: y_true holds a single class")

    if subjects is not None:
        subj = np.asarray([str(s) for s in subjects])
        if len(subj) != n:
            raise ValueError(f"subjects has {len(subj)} entries for {n} samples")
        out["per_subject"] = _per_subject(y, prob, subj)
        notes.append("per-subject auroc is None where a subject's samples hold a single class")
    else:
        subj = None

    if n_boot > 0:
        unit = "subject" if subj is not None else "sample"
        stats = WeightedClassificationStats(y, prob)
        block = bootstrap_ci(stats, n, subj, n_boot=n_boot, ci=ci, seed=seed, unit=unit, bounds=BOUNDS)
        out.update(block)
        if block["few_units"]:
            notes.append(few_units_note(block))
    out["notes"] = notes
    return out


def few_units_note(block: dict[str, Any]) -> str:
    """The warning a report prints beside intervals that rest on fewer than :data:`FEW_UNITS` units."""
    n, unit = block["n_units"], block["ci_unit"]
    return (
        f"intervals rest on {n} {unit}{'s' if n != 1 else ''} only (fewer than {FEW_UNITS}): "
        f"{block['ci_method']}, wide by design; read them as rough"
    )


def paired_difference_ci(
    metric: str | Sequence[str],
    y_true: Sequence[int] | np.ndarray,
    prob_a: np.ndarray,
    prob_b: np.ndarray,
    subjects: Sequence[Any] | np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Interval of ``metric(a) − metric(b)`` on the same samples, paired over subjects.

    For "distilled minus alone" or "student minus teacher": both models are scored on every resample (or
    leave-one-subject-out set) of the same subjects, so the subject-to-subject spread that both share cancels.
    ``metric`` is one name of :data:`SCALAR_METRICS` or several. Returns ``{"metrics", "a": {m: value},
    "b": {m: value}, "difference": {m: a − b}}`` and the interval block (``ci`` holds the differences).
    """
    names = [metric] if isinstance(metric, str) else list(metric)
    unknown = [m for m in names if m not in SCALAR_METRICS]
    if unknown:
        raise ValueError(f"unknown metric {', '.join(unknown)}; choose from {', '.join(SCALAR_METRICS)}")
    y, pa = _check_inputs(y_true, prob_a)
    _, pb = _check_inputs(y, prob_b)
    if pa.shape != pb.shape:
        raise ValueError(f"prob_a and prob_b must score the same samples and classes; got {pa.shape} vs {pb.shape}")
    subj = None
    if subjects is not None:
        subj = np.asarray([str(s) for s in subjects])
        if len(subj) != len(y):
            raise ValueError(f"subjects has {len(subj)} entries for {len(y)} samples")
    stats_a, stats_b = WeightedClassificationStats(y, pa), WeightedClassificationStats(y, pb)

    def difference(weights: np.ndarray) -> dict[str, np.ndarray]:
        a, b = stats_a(weights), stats_b(weights)
        return {m: a[m] - b[m] for m in names}

    ones = np.ones((1, len(y)))
    a, b = stats_a(ones), stats_b(ones)
    out: dict[str, Any] = {
        "metrics": names,
        "a": {m: _clean(a[m][0]) for m in names},
        "b": {m: _clean(b[m][0]) for m in names},
        "difference": {m: _clean(a[m][0] - b[m][0]) for m in names},
    }
    bounds = {m: (lo - hi, hi - lo) for m, (lo, hi) in BOUNDS.items()}
    unit = "subject" if subj is not None else "sample"
    out.update(bootstrap_ci(difference, len(y), subj, n_boot=n_boot, ci=ci, seed=seed, unit=unit, bounds=bounds))
    out["notes"] = [few_units_note(out)] if out["few_units"] else []
    return out


def _per_subject(y: np.ndarray, prob: np.ndarray, subj: np.ndarray) -> dict[str, dict[str, Any]]:
    """Each subject's metrics, scored in one pass as a 0/1 weighting of the samples."""
    unique, codes = np.unique(subj, return_inverse=True)
    stats = WeightedClassificationStats(y, prob)
    out: dict[str, dict[str, Any]] = {}
    for first in range(0, len(unique), CHUNK):
        block = np.arange(first, min(first + CHUNK, len(unique)))
        weights = (codes[None, :] == block[:, None]).astype(np.float64)
        values = stats(weights)
        for row, code in enumerate(block):
            out[str(unique[code])] = {m: _clean(values[m][row]) for m in SCALAR_METRICS}
            out[str(unique[code])]["n"] = int(weights[row].sum())
    return out


def _check_inputs(y_true: Sequence[int] | np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    prob = np.asarray(y_prob, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D; got shape {y.shape}")
    if prob.ndim == 1:
        prob = np.stack([1.0 - prob, prob], axis=1)
    if prob.ndim != 2 or prob.shape[0] != len(y):
        raise ValueError(f"y_prob must be (n,) or (n, K) with n = len(y_true) = {len(y)}; got {prob.shape}")
    if len(y) == 0:
        raise ValueError("no samples to score")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError("y_true must hold integer class indices")
        y = y.astype(np.int64)
    k = prob.shape[1]
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"y_true holds labels outside 0..{k - 1} (y_prob has {k} columns)")
    if not np.all(np.isfinite(prob)) or prob.min() < 0 or prob.max() > 1:
        raise ValueError("y_prob must hold probabilities in [0, 1] (apply softmax to logits first)")
    if not np.allclose(prob.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("rows of y_prob must sum to 1 (apply softmax to logits first)")
    return y.astype(np.int64), prob


def _point_metrics(y: np.ndarray, pred: np.ndarray, per_class: list[float | None]) -> dict[str, float | None]:
    """The scalar metrics by scikit-learn; None where undefined (e.g. κ when only one label occurs)."""
    with warnings.catch_warnings():
        # Expected on small subsets: predicted classes absent from y_true, undefined κ.
        warnings.simplefilter("ignore", UserWarning)
        values = {
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
            "cohen_kappa": skm.cohen_kappa_score(y, pred),
            "f1_weighted": skm.f1_score(y, pred, average="weighted", zero_division=0),
            "accuracy": skm.accuracy_score(y, pred),
        }
    defined = [v for v in per_class if v is not None]
    if len(per_class) == 2:
        values["auroc"] = per_class[1]
    else:
        values["auroc"] = float(np.mean(defined)) if defined else None
    return {m: _clean(values[m]) for m in SCALAR_METRICS}


def _auroc_per_class(y: np.ndarray, prob: np.ndarray) -> list[float | None]:
    """One-vs-rest AUROC of each class by scikit-learn; None for a class with no positives or no negatives."""
    out: list[float | None] = []
    for c in range(prob.shape[1]):
        positive = y == c
        if positive.all() or not positive.any():
            out.append(None)
        else:
            out.append(float(skm.roc_auc_score(positive, prob[:, c])))
    return out


def _clean(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


class WeightedClassificationStats:
    """The scalar metrics of many resamples at once, each given as integer sample weights ``(b, n)``.

    With integer weights every count below is an exact integer, so values equal scikit-learn's on the
    resampled data set (samples repeated by their weights) up to floating-point rounding.
    """

    def __init__(self, y: np.ndarray, prob: np.ndarray):
        self.k = prob.shape[1]
        pred = np.argmax(prob, axis=1)
        cell = y * self.k + pred
        # cell_of[c, i] = 1 where sample i falls in confusion cell c (true * k + predicted)
        self.cell_of = sparse.csr_matrix((np.ones(len(y)), (cell, np.arange(len(y)))), shape=(self.k * self.k, len(y)))
        # AUROC per scored class (only the positive class when binary): negatives sorted by score and,
        # for each positive, how many negatives score below it (lo) and not above it (hi).
        classes = [1] if self.k == 2 else range(self.k)
        self.ranked = []
        for c in classes:
            positives = np.flatnonzero(y == c)
            negatives = np.flatnonzero(y != c)
            negatives = negatives[np.argsort(prob[negatives, c], kind="stable")]
            neg_scores = prob[negatives, c]
            lo = np.searchsorted(neg_scores, prob[positives, c], side="left")
            hi = np.searchsorted(neg_scores, prob[positives, c], side="right")
            self.ranked.append((positives, negatives, lo, hi))

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        b = weights.shape[0]
        conf = (self.cell_of @ weights.T).T.reshape(b, self.k, self.k)
        support = conf.sum(axis=2)
        predicted = conf.sum(axis=1)
        tp = np.diagonal(conf, axis1=1, axis2=2)
        total = support.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = np.where(support > 0, tp / support, np.nan)
            balanced = np.nanmean(recall, axis=1)
            denom = support + predicted
            f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
            f1_weighted = (f1 * support).sum(axis=1) / total
            disagree = total - tp.sum(axis=1)
            expected_disagree = total - (support * predicted).sum(axis=1) / total
            kappa = np.where(expected_disagree > 0, 1 - disagree / expected_disagree, np.nan)
        return {
            "balanced_accuracy": balanced,
            "cohen_kappa": kappa,
            "f1_weighted": f1_weighted,
            "accuracy": tp.sum(axis=1) / total,
            "auroc": self._auroc(weights),
        }

    def _auroc(self, weights: np.ndarray) -> np.ndarray:
        """Weighted Mann–Whitney AUROC per class (ties count one half), then the mean over defined classes."""
        b = weights.shape[0]
        per_class = []
        for positives, negatives, lo, hi in self.ranked:
            below = np.zeros((b, len(negatives) + 1))  # below[:, m]: weight of the m lowest negatives
            np.cumsum(weights[:, negatives], axis=1, out=below[:, 1:])
            wpos = weights[:, positives]
            wins = 0.5 * np.einsum("bi,bi->b", wpos, below[:, lo] + below[:, hi])
            pairs = wpos.sum(axis=1) * below[:, -1]
            with np.errstate(divide="ignore", invalid="ignore"):
                per_class.append(np.where(pairs > 0, wins / pairs, np.nan))
        stacked = np.stack(per_class, axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: AUROC undefined in that resample
            return np.nanmean(stacked, axis=1)
