"""Tasks decide the way their reports say: the binary threshold chosen on validation is the one applied."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from biokd.data.spec import TargetSpec
from biokd.tasks import Binary


def test_binary_report_decides_at_youdens_point() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    logits = rng.normal(size=120) + 1.2 * y
    subjects = [f"s{i % 12}" for i in range(120)]
    chosen = Binary(TargetSpec("binary", classes=["negative", "positive"])).with_threshold_from(logits, y)
    fpr, tpr, _ = roc_curve(y, 1 / (1 + np.exp(-logits)))
    best = int(np.argmax(tpr - fpr))
    report = chosen.report(logits, y, subjects, n_boot=20)
    assert report["sensitivity"] == pytest.approx(tpr[best]) and report["specificity"] == pytest.approx(1 - fpr[best])
    assert report["balanced_accuracy"] == pytest.approx((tpr[best] + 1 - fpr[best]) / 2)
    assert report["threshold_source"] == "Youden's J on validation"
    probs = chosen.decision_probabilities(logits)
    assert np.all((probs >= 0) & (probs <= 1)) and np.allclose(probs.sum(1), 1)
