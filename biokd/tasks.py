"""Tasks as objects: each owns its loss, validation scores, the metrics a run may be selected by, its test
report and the output contract of an exported model. Nothing downstream guesses the task from the data.

:func:`task_for` picks the task from a dataset's :class:`~biokd.data.spec.TargetSpec`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .data.spec import DataSpec, TargetSpec
from .errors import ConfigError

Mode = Literal["max", "min"]


class Task:
    """Base class; see :class:`Classification`, :class:`Binary` and :class:`Forecasting`."""

    kind: ClassVar[str]
    #: Validation metrics a run may be selected by, with the direction that is better.
    select_metrics: ClassVar[dict[str, Mode]]
    default_metric: ClassVar[str]
    #: Metrics shown in comparison tables: report key → column label.
    table_metrics: ClassVar[dict[str, str]]

    def __init__(self, target: TargetSpec):
        self.target = target

    @property
    def key(self) -> str:
        return self.target.key

    @property
    def n_outputs(self) -> int:
        return self.target.n_outputs

    def check_metric(self, name: str, where: str = "train.select_metric") -> Mode:
        """The direction of ``name``; an unknown metric is a config error listing the valid ones."""
        if name not in self.select_metrics:
            raise ConfigError(
                f"{where}: {name!r} is not a validation metric of a {self.kind} task; "
                f"choose one of {', '.join(self.select_metrics)}"
            )
        return self.select_metrics[name]

    def loss(self, output: torch.Tensor, batch: dict[str, Any], label_smoothing: float = 0.0) -> torch.Tensor:
        raise NotImplementedError

    def val_scores(self, outputs: np.ndarray, targets: np.ndarray, subjects: Sequence[str]) -> dict[str, float]:
        raise NotImplementedError

    def report(
        self, outputs: np.ndarray, targets: np.ndarray, subjects: Sequence[str], *, n_boot: int = 1000, seed: int = 0
    ) -> dict[str, Any]:
        raise NotImplementedError

    def output_contract(self) -> dict[str, Any]:
        raise NotImplementedError


class Classification(Task):
    kind = "classification"
    select_metrics: ClassVar[dict[str, Mode]] = {
        "cohen_kappa": "max",
        "balanced_accuracy": "max",
        "f1_weighted": "max",
        "loss": "min",
    }
    default_metric = "cohen_kappa"
    table_metrics: ClassVar[dict[str, str]] = {
        "balanced_accuracy": "balanced acc.",
        "cohen_kappa": "Cohen's κ",
        "f1_weighted": "weighted F1",
        "auroc": "AUROC",
    }

    def loss(self, output, batch, label_smoothing=0.0):
        return F.cross_entropy(output, batch[self.key], label_smoothing=label_smoothing)

    def val_scores(self, outputs, targets, subjects):
        from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score

        pred = outputs.argmax(1)
        logp = torch.log_softmax(torch.as_tensor(outputs, dtype=torch.float64), 1)
        return {
            "balanced_accuracy": float(balanced_accuracy_score(targets, pred)),
            "cohen_kappa": float(cohen_kappa_score(targets, pred)),
            "f1_weighted": float(f1_score(targets, pred, average="weighted")),
            "loss": float(F.nll_loss(logp, torch.as_tensor(targets, dtype=torch.long))),
        }

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.as_tensor(outputs, dtype=torch.float64), 1).numpy()

    decision_probabilities = probabilities

    def report(self, outputs, targets, subjects, *, n_boot=1000, seed=0):
        from .metrics.classification import classification_report

        rep = classification_report(
            targets, self.probabilities(outputs), subjects, class_names=self.target.classes, n_boot=n_boot, seed=seed
        )
        rep["chance_balanced_accuracy"] = 1.0 / len(self.target.classes)
        return rep

    def output_contract(self):
        return {"output": "logits", "shape": [self.n_outputs], "classes": list(self.target.classes)}


class Binary(Task):
    """One logit; label 1 is the positive class. Sensitivity and specificity at ``threshold``."""

    kind = "binary"
    select_metrics: ClassVar[dict[str, Mode]] = {"auroc": "max", "balanced_accuracy": "max", "loss": "min"}
    default_metric = "auroc"
    table_metrics: ClassVar[dict[str, str]] = {
        "auroc": "AUROC",
        "balanced_accuracy": "balanced acc.",
        "sensitivity": "sensitivity",
        "specificity": "specificity",
    }

    def __init__(self, target: TargetSpec, threshold: float = 0.5):
        super().__init__(target)
        self.threshold = threshold
        self.threshold_source = "fixed"

    def loss(self, output, batch, label_smoothing=0.0):
        y = batch[self.key].to(output.dtype)
        if label_smoothing:
            y = y * (1 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(output.reshape(-1), y)

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        return torch.sigmoid(torch.as_tensor(np.asarray(outputs).reshape(-1), dtype=torch.float64)).numpy()

    def val_scores(self, outputs, targets, subjects):
        from sklearn.metrics import balanced_accuracy_score, log_loss, roc_auc_score

        p = self.probabilities(outputs)
        pred = (p > self.threshold).astype(int)
        both = len(np.unique(targets)) == 2
        return {
            "auroc": float(roc_auc_score(targets, p)) if both else 0.5,
            "balanced_accuracy": float(balanced_accuracy_score(targets, pred)),
            "loss": float(log_loss(targets, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        }

    def report(self, outputs, targets, subjects, *, n_boot=1000, seed=0):
        from .metrics.classification import classification_report

        p = self.probabilities(outputs)
        prob = np.stack([1 - p, p], 1)
        rep = classification_report(
            targets, self.decision_probabilities(outputs), subjects, class_names=self.target.classes,
            n_boot=n_boot, seed=seed,
        )  # fmt: skip
        from sklearn.metrics import roc_auc_score, roc_curve

        y = np.asarray(targets)
        pred = (p > self.threshold).astype(int)  # as the report's argmax decides (a tie is negative)
        tp, fn = int(((pred == 1) & (y == 1)).sum()), int(((pred == 0) & (y == 1)).sum())
        tn, fp = int(((pred == 0) & (y == 0)).sum()), int(((pred == 1) & (y == 0)).sum())
        rep["sensitivity"] = tp / (tp + fn) if tp + fn else None
        rep["specificity"] = tn / (tn + fp) if tn + fp else None
        rep["threshold"] = self.threshold
        rep["threshold_source"] = self.threshold_source
        if len(np.unique(y)) == 2:
            rep["auroc"] = float(roc_auc_score(y, prob[:, 1]))
            fpr, tpr, _ = roc_curve(y, prob[:, 1])
            rep["roc_curve"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
        rep["positive_class"] = self.target.positive
        return rep

    def output_contract(self):
        return {"output": "logit", "shape": [1], "positive_class": self.target.positive, "threshold": self.threshold}

    def decision_probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """``(n, 2)`` class probabilities mapped monotonically so that 0.5 falls at ``threshold``: AUROC is
        unchanged and an argmax decides as the threshold does (a tie is negative)."""
        p, thr = self.probabilities(outputs), self.threshold
        q = np.where(p <= thr, 0.5 * p / max(thr, 1e-12), 0.5 + 0.5 * (p - thr) / max(1 - thr, 1e-12))
        return np.stack([1 - q, q], 1)

    def with_threshold_from(self, outputs: np.ndarray, targets: np.ndarray) -> Binary:
        """A copy deciding at the threshold that maximises Youden's J (sensitivity + specificity − 1) on these
        (validation) outputs; unchanged when they hold one class only."""
        from sklearn.metrics import roc_curve

        y = np.asarray(targets)
        if len(np.unique(y)) < 2:
            return self
        fpr, tpr, thresholds = roc_curve(y, self.probabilities(outputs))
        best = int(np.argmax(tpr - fpr))
        # roc_curve counts p >= threshold as positive; this task decides p > threshold: step just below it
        chosen = Binary(self.target, float(np.clip(np.nextafter(thresholds[best], 0.0), 1e-6, 1 - 1e-6)))
        chosen.threshold_source = "Youden's J on validation"
        return chosen


class Forecasting(Task):
    """Forecasts ``(B, H)``; targets may hold NaN where a value is not scored (masked out of loss and metrics)."""

    kind = "forecasting"
    select_metrics: ClassVar[dict[str, Mode]] = {"rmse": "min", "mae": "min", "loss": "min"}
    default_metric = "rmse"
    table_metrics: ClassVar[dict[str, str]] = {"rmse": "RMSE", "mae": "MAE"}

    def loss(self, output, batch, label_smoothing=0.0):
        target = batch[self.key].to(output.dtype)
        mask = torch.isfinite(target)
        if bool(mask.all()):
            return F.mse_loss(output, target)
        diff = torch.where(mask, output - torch.nan_to_num(target), torch.zeros_like(output))
        return (diff**2).sum() / mask.sum().clamp_min(1)

    def val_scores(self, outputs, targets, subjects):
        err = outputs - targets
        ok = np.isfinite(err)
        per_h = [float(np.sqrt(np.mean(err[ok[:, k], k] ** 2))) for k in range(err.shape[1])]
        return {
            "rmse": float(np.mean(per_h)),
            "mae": float(np.mean(np.abs(err[ok]))),
            "loss": float(np.mean(err[ok] ** 2)),
            **{f"rmse_{self._label(k)}": v for k, v in enumerate(per_h)},
        }

    def _label(self, k: int) -> str:
        h = self.target.horizons[k]
        return f"{h:g}{self.target.horizon_unit}"

    def report(self, outputs, targets, subjects, *, n_boot=1000, seed=0):
        from .metrics.regression import regression_report

        rep = regression_report(
            targets, outputs, subjects, [self._label(k) for k in range(outputs.shape[1])], n_boot=n_boot, seed=seed
        )
        rep["unit"] = self.target.unit
        if self.target.metrics:
            from .registry import metrics_extension

            rep["clinical"] = metrics_extension(self.target.metrics)(targets, outputs, subjects, self.target)
        return rep

    def output_contract(self):
        return {
            "output": "forecast",
            "shape": [self.n_outputs],
            "horizons": list(self.target.horizons),
            "horizon_unit": self.target.horizon_unit,
            "unit": self.target.unit,
        }


TASKS: dict[str, type[Task]] = {"classification": Classification, "binary": Binary, "forecasting": Forecasting}


def task_for(spec: DataSpec | TargetSpec, **options: Any) -> Task:
    """The task of a dataset (from its target spec)."""
    target = spec.target if isinstance(spec, DataSpec) else spec
    return TASKS[target.kind](target, **options)
