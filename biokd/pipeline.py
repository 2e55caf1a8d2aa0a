"""Classification runs over a preprocessed window folder: fine-tune a teacher, distil a student, evaluate.

Each run writes one folder: ``config.yaml`` (resolved), ``model.json``, ``checkpoints/``, ``history.json``,
``metrics.json`` and ``report.{md,html}``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from ._io import write_json, write_text
from .config import dump_yaml
from .data.reader import WindowsDataset
from .distill.distiller import Distiller, TermConfig
from .errors import BiokdError, ConfigError, DataError
from .models import build_model, load_run_model, model_spec
from .trainer import Supervised, TrainConfig, fit, load_best, predict_dataset

log = logging.getLogger("biokd")


@dataclass
class DataConfig:
    #: A folder written by ``biokd preprocess`` (protocol.json, manifest.csv, shards/).
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"


@dataclass
class ModelConfig:
    #: A name of :data:`biokd.models.MODELS`; data-dependent sizes (n_chans, n_times, n_outputs) are filled in.
    name: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Pretrained weights to start from (a teacher's foundation weights).
    weights: str | None = None
    #: A finished run folder whose model and best checkpoint to use (a fine-tuned teacher).
    run: str | None = None


@dataclass
class CacheConfig:
    enabled: bool = True
    #: Where the teacher cache lives; default ``<run>/teacher_cache``.
    dir: str | None = None
    shard_size: int = 1024


@dataclass
class DistillConfig:
    terms: list[TermConfig] = field(default_factory=list)
    cache: CacheConfig = field(default_factory=CacheConfig)


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: ModelConfig | None = None
    student: ModelConfig | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: Label smoothing of the task loss when a model trains alone (teacher fine-tuning).
    label_smoothing: float = 0.1
    #: Bootstrap resamples of the test report's confidence intervals.
    n_boot: int = 1000
    #: Free-text notes carried into the report (e.g. "data generated").
    notes: list[str] = field(default_factory=list)


# -- building blocks ------------------------------------------------------------------------------------
def load_split(cfg: RunConfig, split: str) -> WindowsDataset:
    ds = WindowsDataset(cfg.data.root, split)
    if len(ds) == 0:
        raise DataError(Path(cfg.data.root) / "manifest.csv", f"no windows in split {split!r}")
    return ds


def data_sizes(ds: WindowsDataset) -> dict[str, Any]:
    n_chans, n_times = ds.input_shape()
    return {"n_chans": n_chans, "n_times": n_times, "n_outputs": ds.n_classes}


def make_model(mc: ModelConfig, ds: WindowsDataset) -> nn.Module:
    """Build ``mc`` for the data of ``ds``; explicit kwargs that contradict the data are refused."""
    if mc.run:
        model = load_run_model(mc.run)
    else:
        sizes = data_sizes(ds)
        for key, value in sizes.items():
            if key in mc.kwargs and mc.kwargs[key] != value:
                raise DataError(
                    Path(ds.root) / "protocol.json",
                    f"model {mc.name!r} was configured with {key}={mc.kwargs[key]} but the data has {key}={value}",
                )
        model = build_model(mc.name, **{**sizes, **mc.kwargs})
        if mc.weights:
            from .eeg.cbramod import load_pretrained

            load_pretrained(model, mc.weights)
    check_fits(model, ds)
    return model


def check_fits(model: nn.Module, ds: WindowsDataset) -> None:
    """Refuse data whose channels, length or sampling rate differ from what the model was built for."""
    cfg = getattr(model, "config", {})
    n_chans, n_times = ds.input_shape()
    expected = {"n_chans": n_chans, "n_times": n_times, "n_outputs": ds.n_classes, "sfreq": ds.sfreq}
    wrong = {k: (cfg[k], v) for k, v in expected.items() if k in cfg and cfg[k] is not None and cfg[k] != v}
    if wrong:
        detail = "; ".join(f"{k}: model expects {a}, data has {b}" for k, (a, b) in wrong.items())
        raise DataError(Path(ds.root) / "protocol.json", f"data does not fit {type(model).__name__}: {detail}")


def validation_scores(outputs: np.ndarray, targets: np.ndarray, subjects: list[str]) -> dict[str, float]:
    """Fast point metrics for epoch selection (the test report adds CIs and per-subject values)."""
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score

    pred = outputs.argmax(1)
    return {
        "balanced_accuracy": float(balanced_accuracy_score(targets, pred)),
        "cohen_kappa": float(cohen_kappa_score(targets, pred)),
        "f1_weighted": float(f1_score(targets, pred, average="weighted")),
    }


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def evaluate_model(model: nn.Module, ds: WindowsDataset, n_boot: int = 1000, batch_size: int = 64) -> dict[str, Any]:
    """Clinical classification report of ``model`` on ``ds`` (subject-bootstrap CIs) plus its size and cost."""
    from .metrics.classification import classification_report
    from .profiling import model_summary

    outputs, targets, subjects = predict_dataset(Supervised(model), ds, batch_size, torch.device("cpu"))
    report = classification_report(targets, softmax(outputs), subjects, class_names=ds.class_names, n_boot=n_boot)
    example = torch.zeros(1, *ds.input_shape())
    report["model"] = model_summary(model, (example,))
    return report


def _write_run_files(out: Path, cfg: RunConfig, model: nn.Module) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", dump_yaml(cfg))
    write_json(out / "model.json", model_spec(model))


# -- runs -----------------------------------------------------------------------------------------------
def train_teacher(cfg: RunConfig, out: str | Path) -> dict[str, Any]:
    """Fine-tune ``cfg.teacher`` on the data (task loss only); returns the test report."""
    if cfg.teacher is None:
        raise ConfigError("train-teacher needs a `teacher:` section")
    out = Path(out)
    train, val, test = (load_split(cfg, s) for s in (cfg.data.train_split, cfg.data.val_split, cfg.data.test_split))
    teacher = make_model(cfg.teacher, train)
    _write_run_files(out, cfg, teacher)
    learner = Supervised(teacher, "classification", cfg.label_smoothing)
    result = fit(learner, train, val, cfg.train, out, validation_scores, log=log.info)
    load_best(learner, out)
    report = {"teacher": evaluate_model(teacher, test, cfg.n_boot), "best_epoch": result.best_epoch}
    write_json(out / "metrics.json", report)
    write_run_report(out, "Teacher fine-tuning", {"teacher": report["teacher"]}, test.class_names, cfg.notes)
    return report


def distill(cfg: RunConfig, out: str | Path) -> dict[str, Any]:
    """Distil ``cfg.teacher`` into ``cfg.student`` with ``cfg.distill.terms``; returns the test reports of both."""
    from .distill.cache import build_cache, data_fingerprint, hash_state_dict

    if cfg.teacher is None or cfg.student is None:
        raise ConfigError("distill needs `teacher:` and `student:` sections")
    if not cfg.distill.terms:
        raise ConfigError("distill.terms is empty: list the loss terms (at least the task loss)")
    out = Path(out)
    train, val, test = (load_split(cfg, s) for s in (cfg.data.train_split, cfg.data.val_split, cfg.data.test_split))
    teacher = make_model(cfg.teacher, train)
    student = make_model(cfg.student, train)
    _write_run_files(out, cfg, student)
    distiller = Distiller(student, teacher, cfg.distill.terms, "classification")
    probe = torch.utils.data.default_collate([train[i] for i in range(min(2, len(train)))])
    distiller.setup(probe)
    cache = None
    needs_teacher = any(t.kind not in ("cross_entropy", "mse") for t in cfg.distill.terms)
    if cfg.distill.cache.enabled and needs_teacher and cfg.train.augment_noise_std == 0:
        key = {
            "teacher": hash_state_dict(teacher),
            "data": data_fingerprint(cfg.data.root),
            "split": cfg.data.train_split,
            "views": [asdict(t) for t in cfg.distill.terms if t.kind not in ("cross_entropy", "mse")],
        }
        cache_dir = Path(cfg.distill.cache.dir) if cfg.distill.cache.dir else out / "teacher_cache"
        cache = build_cache(
            cache_dir, distiller.teacher_targets, train, key, shard_size=cfg.distill.cache.shard_size, log=log.info
        )
    result = fit(distiller, train, val, cfg.train, out, validation_scores, teacher_cache=cache, log=log.info)
    load_best(distiller, out)
    reports = {
        "teacher": evaluate_model(teacher, test, cfg.n_boot),
        "student": evaluate_model(student, test, cfg.n_boot),
    }
    router = router_weights(distiller, test) if distiller.routers else None
    metrics = {**reports, "best_epoch": result.best_epoch}
    if router is not None:
        metrics["router_mean_weights"] = {k: w.mean(0).tolist() for k, (w, _) in router.items()}
    write_json(out / "metrics.json", metrics)
    write_run_report(
        out,
        "Distillation",
        reports,
        test.class_names,
        cfg.notes,
        router=router,
        layer_names={t.name: t.teacher for t in cfg.distill.terms},
    )
    return metrics


@torch.no_grad()
def router_weights(distiller: Distiller, ds: WindowsDataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-input router weights over ``ds``: ``{term: (weights (n, L), labels (n,))}``."""
    from torch.utils.data import DataLoader

    distiller.eval()
    found: dict[str, list[np.ndarray]] = {name: [] for name in distiller.routers}
    labels = []
    for batch in DataLoader(ds, batch_size=64):
        views = distiller.teacher_targets(batch)
        for name, router in distiller.routers.items():
            found[name].append(router(views[f"view:{name}"])[1].numpy())
        labels.append(batch["label"].numpy())
    y = np.concatenate(labels)
    return {name: (np.concatenate(w), y) for name, w in found.items()}


def evaluate_run(run_dir: str | Path, split: str = "test", n_boot: int = 1000) -> dict[str, Any]:
    """Score a run's best model on ``split`` of the run's data; writes ``metrics-<split>.json`` and a report."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise BiokdError(f"{run_dir}: not a biokd run folder (no config.yaml)")
    root = (yaml.safe_load(cfg_path.read_text()) or {}).get("data", {}).get("root")
    model = load_run_model(run_dir)
    ds = WindowsDataset(root, split)
    check_fits(model, ds)
    report = evaluate_model(model, ds, n_boot)
    write_json(run_dir / f"metrics-{split}.json", report)
    write_run_report(run_dir, f"Evaluation on {split}", {"model": report}, ds.class_names, [], stem=f"report-{split}")
    return report


def write_run_report(
    out: Path,
    title: str,
    reports: dict[str, dict[str, Any]],
    class_names: list[str],
    notes: list[str],
    *,
    router: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    layer_names: dict[str, list[str]] | None = None,
    stem: str = "report",
    extra_rows: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Side-by-side table (metrics with subject-bootstrap CIs, size, FLOPs, latency) and confusion matrices."""
    from .report import Report, comparison_rows, plot_confusion_matrix, plot_layer_weights_per_class

    rep = Report(title)
    for note in notes:
        rep.add_note(note)
    extra = {}
    for name, r in reports.items():
        m = r.get("model", {})
        extra[name] = {
            "parameters": f"{m.get('parameters', 0):,}",
            "MFLOPs / window": f"{m.get('flops', 0) / 1e6:.1f}",
            "CPU ms / window (1 thread, p50)": f"{m.get('cpu_latency_ms', {}).get('p50', float('nan')):.2f}",
            **(extra_rows or {}).get(name, {}),
        }
    rep.add_table("Test set (95% CIs: bootstrap over subjects)", comparison_rows(reports, extra))
    for name, r in reports.items():
        rep.add_figure(f"Confusion matrix: {name}", plot_confusion_matrix(np.array(r["confusion_matrix"]), class_names))
    for term, (weights, labels) in (router or {}).items():
        names = (layer_names or {}).get(term) or [f"layer {i}" for i in range(weights.shape[1])]
        short = [n.rsplit(".", 1)[-1] if n.rsplit(".", 1)[-1].isdigit() else n for n in names]
        fig = plot_layer_weights_per_class(weights, labels, class_names, short)
        rep.add_figure(f"Router weights per class ({term})", fig)
    rep.add_json("results", reports)
    rep.write(out, stem=stem, json_name=None)
