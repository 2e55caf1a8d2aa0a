"""One pipeline for every dataset and task: fine-tune a teacher, distil a student (beside the same student
trained alone), evaluate a run. The task comes from the data spec; models take their sizes from it.

Each run writes one folder: ``config.yaml`` (resolved), ``model.json``, ``data.json`` (the data it was
trained on: protocol hash, root, subjects of each split), ``checkpoints/``, ``history.json``,
``metrics.json`` and ``report.{md,html}``. Everything a config can tell is checked before any model is
loaded and before the run folder is written.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._io import sha256_json, write_text
from .config import dump_yaml, to_dict
from .data.reader import ShardDataset, read_protocol
from .data.spec import DataSpec, spec_of
from .data.stages import StageConfig, fit_stages
from .data.transforms import Compose, TransformConfig, build_transforms
from .distill.distiller import Distiller, reads_teacher
from .distill.terms import TaskLoss, Term
from .errors import BiokdError, ConfigError, DataError, LeakageError
from .models import load_run_model, model_spec
from .parallel import is_main, main_first
from .parallel import main_write_json as write_json
from .registry import MODELS, resolve
from .tasks import Task, task_for
from .trainer import Supervised, TrainConfig, fit, load_best, model_device, predict_dataset, seed_everything

log = logging.getLogger("biokd")


@dataclass
class DataConfig:
    #: A folder written by ``biokd preprocess`` (protocol.json, manifest.csv, shards/). Relative paths in a
    #: run folder's config are relative to the run folder.
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    #: Transforms of the training items (augmentations, e.g. ``{kind: noise, params: {std: 0.1}}``).
    train_transforms: list[TransformConfig] = field(default_factory=list)
    #: Group-fitted stages (e.g. ``{kind: tangent}``): fitted on the training subjects only, applied to all splits.
    stages: list[StageConfig] = field(default_factory=list)


@dataclass
class ModelConfig:
    #: A name of :data:`biokd.registry.MODELS`; data-dependent sizes come from the data spec.
    name: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Pretrained weights to start from (a teacher's foundation weights), read by the model's own loader.
    weights: str | None = None
    #: A finished run folder whose model and best checkpoint to use (a fine-tuned teacher).
    run: str | None = None
    #: Accept a teacher run that saw validation or test subjects of this run (the report says so).
    allow_overlap: bool = False


@dataclass
class CacheConfig:
    enabled: bool = True
    #: Where the teacher cache lives; default ``<run>/teacher_cache``.
    dir: str | None = None
    shard_size: int = 1024


@dataclass
class DistillConfig:
    terms: list[Term] = field(default_factory=list)
    cache: CacheConfig = field(default_factory=CacheConfig)
    #: Also train the student alone (task loss only, same initial weights and budget) and report it beside.
    baseline: bool = True


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: ModelConfig | None = None
    student: ModelConfig | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: Label smoothing of the task loss when a model trains alone (teacher fine-tuning, the alone baseline).
    label_smoothing: float = 0.1
    #: Bootstrap resamples of the test report's confidence intervals.
    n_boot: int = 1000
    #: Free-text notes carried into the report (e.g. "data generated").
    notes: list[str] = field(default_factory=list)
    #: Metadata columns (e.g. ``[site]``) by which the test report also scores each group of subjects.
    report_by: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.n_boot < 1:
            raise ConfigError(f"n_boot must be at least 1; got {self.n_boot}")
        if not (0 <= self.label_smoothing < 1) or math.isnan(self.label_smoothing):
            raise ConfigError(f"label_smoothing must be in [0, 1); got {self.label_smoothing}")


# -- data ------------------------------------------------------------------------------------------------
@dataclass
class RunData:
    """The splits of a run, its spec and task, checked for leakage."""

    spec: DataSpec
    task: Task
    train: ShardDataset
    val: ShardDataset
    test: ShardDataset

    def record(self) -> dict[str, Any]:
        """What ``data.json`` records: the data a run was trained and scored on."""
        return {
            "root": str(Path(self.train.root).resolve()),
            "protocol_hash": self.train.protocol.get("hash"),
            "dataset": self.spec.dataset,
            "subjects": {name: ds.subjects for name, ds in self.splits().items()},
        }

    def splits(self) -> dict[str, ShardDataset]:
        return {"train": self.train, "val": self.val, "test": self.test}


def load_data(cfg: RunConfig, split_by: str | None = None) -> RunData:
    """Read the three splits of ``cfg.data``, refusing leaks between any two of them."""
    root = Path(cfg.data.root)
    if not cfg.data.root:
        raise ConfigError("data.root is empty: name a folder written by `biokd preprocess ...`")
    protocol = read_protocol(root)
    spec = spec_of(protocol, str(root / "protocol.json"))
    names = {"train": cfg.data.train_split, "val": cfg.data.val_split, "test": cfg.data.test_split}
    if len(set(names.values())) != 3:
        raise LeakageError(f"data splits must be three different splits; got {names}")
    augment = build_transforms(cfg.data.train_transforms, spec.input_names)
    stages = fit_stages(root, cfg.data.stages, names["train"]) if cfg.data.stages else []
    transforms = {"train": Compose([*stages, *augment.transforms]), "val": Compose(stages), "test": Compose(stages)}
    data = {role: ShardDataset(root, name, transforms[role]) for role, name in names.items()}
    for role, ds in data.items():
        if len(ds) == 0:
            raise DataError(root / "manifest.csv", f"no items in split {names[role]!r} (data.{role}_split)")
    run = RunData(spec, task_for(spec), **data)
    check_splits(run, split_by or cfg.train.split_by, names)
    return run


def check_splits(run: RunData, split_by: str, names: dict[str, str]) -> None:
    """Subject splits: pairwise disjoint. Time splits: per subject, train before validation before test."""
    if split_by == "subject":
        from .splits import check_no_leakage

        check_no_leakage({f"{role} ({names[role]})": ds.subjects for role, ds in run.splits().items()})
        return
    order = {}
    for role, ds in run.splits().items():
        for subject, rows in ds.manifest.groupby("subject")["index"]:
            order.setdefault(str(subject), {})[role] = (int(rows.min()), int(rows.max()))
    for subject, spans in order.items():
        seq = [spans[r] for r in ("train", "val", "test") if r in spans]
        if any(a[1] >= b[0] for a, b in itertools.pairwise(seq)):
            raise LeakageError(
                f"subject {subject}: time splits overlap or are out of order ({spans}); train must precede "
                "validation, which must precede test"
            )


# -- models ----------------------------------------------------------------------------------------------
def build_model(mc: ModelConfig, spec: DataSpec, where: str) -> nn.Module:
    """Build ``mc`` for ``spec`` (no weights yet); explicit kwargs that contradict the data are refused."""
    if mc.run:
        return load_run_model(resolve_path(mc.run))
    if not mc.name:
        raise ConfigError(f"{where}.name is empty; known models: {', '.join(MODELS)}")
    cls = resolve(MODELS, mc.name, f"model ({where}.name)")
    sizes = cls.spec_sizes(spec) if hasattr(cls, "spec_sizes") else {}
    for key, value in sizes.items():
        if key in mc.kwargs and mc.kwargs[key] != value:
            raise ConfigError(f"{where}.kwargs.{key}={mc.kwargs[key]} contradicts the data, which has {key}={value}")
    try:
        model = cls(**{**sizes, **mc.kwargs})
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where} ({mc.name}): {err}") from None
    check_inputs(model, spec, where)
    return model


def check_inputs(model: nn.Module, spec: DataSpec, where: str) -> None:
    keys = getattr(model, "input_keys", ())
    if missing := [k for k in keys if k not in spec.input_names]:
        raise ConfigError(
            f"{where}: {type(model).__name__} reads {missing}, which the data ({spec.dataset}) does not hold; "
            f"its inputs are {spec.input_names}"
        )


def check_fits(model: nn.Module, spec: DataSpec, where: str = "model") -> None:
    """Refuse data whose sizes differ from what ``model`` (e.g. from a run folder) was built for."""
    check_inputs(model, spec, where)
    expected = type(model).spec_sizes(spec) if hasattr(type(model), "spec_sizes") else {}
    cfg = getattr(model, "config", {})
    wrong = {k: (cfg[k], v) for k, v in expected.items() if cfg.get(k) is not None and cfg[k] != v}
    if wrong:
        detail = "; ".join(f"{k}: model expects {a}, data has {b}" for k, (a, b) in wrong.items())
        raise DataError(None, f"data does not fit {where} ({type(model).__name__}): {detail}")


def load_weights(model: nn.Module, mc: ModelConfig) -> dict[str, Any]:
    """Load ``mc.weights`` through the model's own loader; returns the provenance for the report."""
    if not mc.weights:
        return {"weights": None, "pretrained": bool(mc.run)}
    path = resolve_path(mc.weights)
    if not hasattr(model, "load_pretrained"):
        raise ConfigError(f"{type(model).__name__} has no pretrained-weights loader; remove `weights`")
    model.load_pretrained(path)
    from ._io import sha256_file

    return {"weights": str(path), "sha256": sha256_file(path) if path.is_file() else None, "pretrained": True}


def resolve_path(path: str | Path) -> Path:
    return Path(path).expanduser()


# -- evaluation ------------------------------------------------------------------------------------------
def example_inputs(model: nn.Module, spec: DataSpec) -> tuple[torch.Tensor, ...]:
    return tuple(torch.zeros(1, *spec.input(k).shape) for k in model.input_keys)


def predictions(model: nn.Module, ds: ShardDataset, task: Task) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Outputs, targets and subjects of ``model`` over ``ds``, computed on the model's own device."""
    return predict_dataset(Supervised(model, task), ds, 64, model_device(model), task.key)


def evaluate_model(
    model: nn.Module,
    ds: ShardDataset,
    task: Task,
    n_boot: int = 1000,
    group_by: list[str] | tuple[str, ...] = (),
    outputs: Any = None,
    val: ShardDataset | None = None,
) -> dict[str, Any]:
    """The task's test report of ``model`` on ``ds`` (intervals over subjects) plus its size and CPU cost; with
    ``group_by``, also the report of each group of items sharing a metadata value (``report["groups"]``).

    A task with a decision threshold to choose (binary) chooses it on ``val`` when given, never on ``ds``."""
    from .profiling import model_summary

    if val is not None and hasattr(task, "with_threshold_from"):
        out_val, y_val, _ = predictions(model, val, task)
        task = task.with_threshold_from(out_val, y_val)
    outputs, targets, subjects = outputs or predictions(model, ds, task)
    report = task.report(outputs, targets, subjects, n_boot=n_boot)
    if group_by:
        report["groups"] = group_reports(ds, task, outputs, targets, subjects, group_by, n_boot)
    report["model"] = model_summary(copy.deepcopy(model).cpu().eval(), example_inputs(model, ds.spec))
    return report


def group_reports(
    ds: ShardDataset, task: Task, outputs: np.ndarray, targets: np.ndarray, subjects: list[str],
    group_by: list[str] | tuple[str, ...], n_boot: int,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """``{column: {value: report}}``: the task's report on each group of items (CIs over that group's subjects)."""
    out: dict[str, dict[str, Any]] = {}
    for column in group_by:
        if column not in ds.manifest.columns:
            raise ConfigError(f"report_by: {column!r} is not a manifest column ({sorted(ds.manifest.columns)})")
        values = ds.manifest[column].astype(str).to_numpy()
        groups: dict[str, Any] = {}
        for value in sorted(set(values)):
            idx = np.flatnonzero(values == value)
            rep = task.report(outputs[idx], targets[idx], [subjects[i] for i in idx], n_boot=n_boot)
            groups[value] = {k: v for k, v in rep.items() if k not in ("per_subject", "roc_curve")}
        out[column] = groups
    return out


# -- runs ------------------------------------------------------------------------------------------------
def prepare_run_dir(out: Path, cfg: RunConfig, restart: bool = False) -> None:
    """Refuse a run folder that holds another run (another config) unless ``restart``; never overwrite first."""
    cfg_path = out / "config.yaml"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: --out is a file, not a folder")
    if cfg_path.is_file():
        import yaml

        old = yaml.safe_load(cfg_path.read_text()) or {}
        new = to_dict(cfg)
        if old != new and not restart:
            diff = _diff(old, new)
            raise ConfigError(
                f"{out} holds a run of another config ({'; '.join(diff[:4])}); choose a new --out, or pass "
                "--restart to discard that run's checkpoints"
            )
        if old != new and restart and is_main():
            import shutil

            shutil.rmtree(out / "checkpoints", ignore_errors=True)


def _diff(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(k), new.get(k), f"{where}.{k}" if where else str(k))
        return out
    return [] if old == new else [f"{where}: {old!r} → {new!r}"]


def _write_run_files(out: Path, cfg: RunConfig, model: nn.Module, data: RunData, extra: dict[str, Any]) -> None:
    if not is_main():
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", dump_yaml(cfg))
    write_json(out / "model.json", model_spec(model))
    write_json(out / "data.json", {**data.record(), **extra})


def _run(out: Path, fn: Any, cfg: RunConfig) -> Any:
    from .data.store import folder_lock
    from .tracking import finish_run

    if not is_main():  # rank 0 holds the lock for all ranks of a torchrun
        return fn()
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, "another run"):
        result = fn()
    finish_run(cfg.train.track, out, to_dict(cfg), cfg.train.track_uri)
    return result


def train_teacher(cfg: RunConfig, out: str | Path, restart: bool = False) -> dict[str, Any]:
    """Fine-tune ``cfg.teacher`` on the data (task loss only); returns the test report."""
    if cfg.teacher is None:
        raise ConfigError("train-teacher needs a `teacher:` section")
    out = Path(out)
    data = load_data(cfg)
    data.task.check_metric(_metric(cfg, data.task))
    prepare_run_dir(out, cfg, restart)
    seed_everything(cfg.train.seed)
    teacher = build_model(cfg.teacher, data.spec, "teacher")
    provenance = load_weights(teacher, cfg.teacher)
    if not provenance["pretrained"]:
        log.warning("teacher: no pretrained weights given (teacher.weights): training from scratch")

    def go() -> dict[str, Any]:
        _write_run_files(out, cfg, teacher, data, {"teacher_provenance": provenance})
        learner = Supervised(teacher, data.task, cfg.label_smoothing)
        result = fit(learner, data.train, data.val, cfg.train, out, data.task, log=log.info)
        load_best(learner, out)
        report = {
            "teacher": evaluate_model(teacher, data.test, data.task, cfg.n_boot, cfg.report_by, val=data.val),
            "best_epoch": result.best_epoch,
            "teacher_provenance": provenance,
        }
        write_json(out / "metrics.json", report)
        title = (
            "Teacher fine-tuning"
            if provenance["pretrained"]
            else "Teacher trained from scratch (no pretrained weights)"
        )
        notes = [*cfg.notes, _selected(result, cfg, data.task)]
        if not provenance["pretrained"]:
            notes.insert(0, "The teacher was trained from scratch: no pretrained weights were given.")
        write_run_report(out, title, {"teacher": report["teacher"]}, data, notes, history=result.history)
        return report

    return _run(out, go, cfg)


def _selected(result: Any, cfg: RunConfig, task: Task) -> str:
    return f"Selected epoch: {result.best_epoch} of {cfg.train.epochs}, by validation {_metric(cfg, task)}."


def _metric(cfg: RunConfig, task: Task) -> str:
    return task.default_metric if cfg.train.select_metric == "auto" else cfg.train.select_metric


def check_teacher_run(cfg: RunConfig, data: RunData) -> list[str]:
    """Refuse a teacher run that trained on this run's validation or test subjects, or selected its epoch on
    test subjects (unless allowed; then the report says so)."""
    assert cfg.teacher is not None
    if not cfg.teacher.run:
        return []
    record_path = resolve_path(cfg.teacher.run) / "data.json"
    if not record_path.is_file():
        if cfg.teacher.allow_overlap:
            return [f"The teacher run {cfg.teacher.run} records no training data; overlap could not be checked."]
        raise LeakageError(
            f"{record_path}: missing, so the teacher's training subjects are unknown; retrain the teacher with "
            "this version, or set teacher.allow_overlap: true (the report will say so)"
        )
    import json

    try:
        record = json.loads(record_path.read_text())
        trained = {str(s) for s in record["subjects"].get("train", [])}
        selected = {str(s) for s in record["subjects"].get("val", [])}
    except (ValueError, KeyError, AttributeError, TypeError) as err:
        raise DataError(record_path, f"not a valid data record ({err})") from None
    notes = []
    if not (record.get("teacher_provenance") or {}).get("pretrained", True):
        notes.append(f"The teacher (run {cfg.teacher.run}) was trained from scratch, not from pretrained weights.")
    if data.task.kind == "forecasting" and cfg.train.split_by == "time":
        return notes  # within-patient protocols share patients by design; time order is checked per patient
    # trained on: never in this run's validation or test; used to select the teacher's epoch: never in its test
    leaks = {
        "val": sorted(trained & set(data.val.subjects)),
        "test": sorted((trained | selected) & set(data.test.subjects)),
    }
    leaks = {k: v for k, v in leaks.items() if v}
    if not leaks:
        return notes
    listed = "; ".join(f"{role}: {', '.join(v[:10])}{' …' if len(v) > 10 else ''}" for role, v in leaks.items())
    if not cfg.teacher.allow_overlap:
        raise LeakageError(
            f"the teacher run {cfg.teacher.run} was trained on subjects of this run's evaluation splits ({listed}); "
            "use a teacher trained on other subjects, or set teacher.allow_overlap: true (the report will say so)"
        )
    return [
        *notes,
        f"WARNING: the teacher saw evaluation subjects of this run ({listed}); teacher.allow_overlap is set.",
    ]


def distill(cfg: RunConfig, out: str | Path, restart: bool = False) -> dict[str, Any]:
    """Distil ``cfg.teacher`` into ``cfg.student`` with ``cfg.distill.terms``, beside the student trained alone."""
    from .distill.cache import build_cache, data_fingerprint, hash_state_dict

    if cfg.teacher is None or cfg.student is None:
        raise ConfigError("distill needs `teacher:` and `student:` sections")
    if not cfg.distill.terms:
        raise ConfigError("distill.terms is empty: list the loss terms (at least the task loss)")
    out = Path(out)
    data = load_data(cfg)
    data.task.check_metric(_metric(cfg, data.task))
    for term in cfg.distill.terms:
        term.check(data.spec, data.task)
    notes = [*cfg.notes, *check_teacher_run(cfg, data)]
    prepare_run_dir(out, cfg, restart)
    seed_everything(cfg.train.seed)
    teacher = build_model(cfg.teacher, data.spec, "teacher")
    check_fits(teacher, data.spec, "teacher")
    student_init = build_model(cfg.student, data.spec, "student")
    student = copy.deepcopy(student_init)
    distiller = Distiller(student, teacher, cfg.distill.terms, data.task)  # checks tap paths before any weights
    provenance = load_weights(teacher, cfg.teacher)
    if not provenance["pretrained"]:
        notes.insert(0, "WARNING: the teacher is untrained here (no run and no pretrained weights).")
        log.warning("teacher: neither teacher.run nor teacher.weights is set; the teacher is untrained")
    # a few windows: shapes for the projections, and data for decoders fitted at set-up (signal-rate views)
    probe = torch.utils.data.default_collate([data.train[i] for i in range(min(16, len(data.train)))])
    distiller.setup(probe)

    def go() -> dict[str, Any]:
        _write_run_files(out, cfg, student, data, {"teacher_provenance": provenance})
        device = _device(cfg)
        cache = None
        if cfg.distill.cache.enabled and reads_teacher(cfg.distill.terms) and not data.train.transforms.random:
            key = {
                "teacher": hash_state_dict(teacher),
                "data": data_fingerprint(cfg.data.root),
                "split": cfg.data.train_split,
                "views": [to_dict(t) for t in cfg.distill.terms if t.reads_teacher],
            }
            cache_dir = Path(cfg.distill.cache.dir) if cfg.distill.cache.dir else out / "teacher_cache"
            distiller.to(device)
            cache = main_first(  # rank 0 builds it, the other ranks then find it complete and read it
                lambda: build_cache(
                    cache_dir,
                    distiller.teacher_targets,
                    data.train,
                    key,
                    shard_size=cfg.distill.cache.shard_size,
                    device=device,
                    log=log.info if is_main() else lambda m: None,
                    progress=cfg.train.progress,
                )
            )
        result = fit(distiller, data.train, data.val, cfg.train, out, data.task, teacher_cache=cache, log=log.info)
        load_best(distiller, out)
        preds = {"teacher": predictions(teacher, data.test, data.task)}
        preds["student (distilled)"] = predictions(student, data.test, data.task)
        histories = {"student (distilled)": result.history}
        if cfg.distill.baseline:
            alone = copy.deepcopy(student_init)  # the same initial weights as the distilled student
            smoothing = next((t.label_smoothing for t in cfg.distill.terms if isinstance(t, TaskLoss)), 0.0)
            seed_everything(cfg.train.seed)
            res = fit(Supervised(alone, data.task, smoothing), data.train, data.val, cfg.train, out / "alone",
                      data.task, log=log.info)  # fmt: skip
            load_best(Supervised(alone, data.task), out / "alone")
            write_json(out / "alone" / "model.json", model_spec(alone))
            preds["student (alone)"] = predictions(alone, data.test, data.task)
            histories["student (alone)"] = res.history
        models = {
            "teacher": teacher,
            "student (distilled)": student,
            "student (alone)": alone if cfg.distill.baseline else None,
        }
        reports = {
            name: evaluate_model(
                models[name], data.test, data.task, cfg.n_boot, cfg.report_by, outputs=out, val=data.val
            )
            for name, out in preds.items()
        }
        differences = paired_differences(data.task, preds, cfg.n_boot, reports)
        router = router_weights(distiller, data.test) if distiller.routers else None
        metrics: dict[str, Any] = {
            **reports,
            "student": reports["student (distilled)"],
            "best_epoch": result.best_epoch,
            "teacher_provenance": provenance,
            "paired_differences": differences,
        }
        if router is not None:
            metrics["router_mean_weights"] = {k: w.mean(0).tolist() for k, (w, _) in router.items()}
        write_json(out / "metrics.json", metrics)
        notes.append(_selected(result, cfg, data.task))
        write_run_report(
            out, "Distillation", reports, data, notes, router=router, history=histories,
            layer_names={t.name: t.teacher_layers() for t in cfg.distill.terms}, differences=differences,
        )  # fmt: skip
        return metrics

    return _run(out, go, cfg)


PAIRS = (("student (distilled)", "student (alone)"), ("student (distilled)", "teacher"))


def paired_differences(
    task: Task, preds: dict[str, Any], n_boot: int, reports: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Paired intervals over subjects of "distilled minus alone" and "student minus teacher" (class tasks);
    each model decides at the threshold its report used (binary tasks choose one per model on validation)."""
    if task.kind == "forecasting":
        return {}
    from .metrics.classification import paired_difference_ci

    metrics = [m for m in task.table_metrics if m in ("balanced_accuracy", "cohen_kappa", "auroc", "f1_weighted")]
    out = {}
    for a, b in PAIRS:
        if a in preds and b in preds:
            (oa, y, subjects), (ob, _, _) = preds[a], preds[b]
            pa, pb = (_decider(task, (reports or {}).get(m)).decision_probabilities(o) for m, o in ((a, oa), (b, ob)))
            out[f"{a} − {b}"] = paired_difference_ci(metrics, y, pa, pb, subjects, n_boot=n_boot)
    return out


def _decider(task: Task, report: dict[str, Any] | None) -> Any:
    """The task deciding at the threshold a model's report chose (the task itself when there is none)."""
    threshold = (report or {}).get("threshold")
    return task if threshold is None else type(task)(task.target, threshold)


def _device(cfg: RunConfig) -> torch.device:
    from .trainer import pick_device

    return pick_device(cfg.train.device)


@torch.no_grad()
def router_weights(distiller: Distiller, ds: ShardDataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-input router weights over ``ds``: ``{term: (weights (n, L), labels (n,))}``."""
    from torch.utils.data import DataLoader

    from .batch import to_device

    distiller.eval()
    device = model_device(distiller)
    found: dict[str, list[np.ndarray]] = {name: [] for name in distiller.routers}
    labels = []
    for batch in DataLoader(ds, batch_size=64):
        views = distiller.teacher_targets(to_device(batch, device))
        for name, router in distiller.routers.items():
            found[name].append(router(views[f"view:{name}"])[1].cpu().numpy())
        labels.append(np.asarray(batch[distiller.task.key]))
    y = np.concatenate(labels)
    return {name: (np.concatenate(w), y) for name, w in found.items()}


def run_data_root(run_dir: Path, data_root: str | Path | None = None) -> Path:
    """The data folder of a run: ``data_root`` if given, else the run's config (relative to the run folder)."""
    import yaml

    if data_root is not None:
        return Path(data_root)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise BiokdError(f"{run_dir}: not a biokd run folder (no config.yaml)")
    from .config import safe_load_yaml

    try:
        cfg = safe_load_yaml(cfg_path.read_text()) or {}
        root = cfg.get("data", {}).get("root")
    except (yaml.YAMLError, AttributeError, ConfigError) as err:
        raise DataError(cfg_path, f"not a valid run config ({' '.join(str(err).split())})") from None
    if not isinstance(root, str) or not root:
        raise DataError(cfg_path, "names no data.root; pass --data-root")
    candidates = [Path(root)] if Path(root).is_absolute() else [run_dir / root, Path(root)]
    record = run_dir / "data.json"
    if record.is_file():
        import json

        with contextlib.suppress(ValueError, KeyError, TypeError):
            candidates.append(Path(json.loads(record.read_text())["root"]))
    for c in candidates:
        if (c / "protocol.json").is_file():
            return c
    looked = ", ".join(str(c) for c in candidates)
    raise DataError(None, f"the data of run {run_dir} was not found (looked in {looked}); pass --data-root")


def _run_config(run_dir: Path) -> RunConfig:
    """A run folder's resolved config, validated like any user config (a run folder is untrusted input)."""
    from .config import load_config

    return load_config(RunConfig, run_dir / "config.yaml")


def run_stages(cfg: RunConfig, root: Path) -> list[Any]:
    """The group stages of a run, fitted on its training split (the saved fit is reused)."""
    return fit_stages(root, cfg.data.stages, cfg.data.train_split) if cfg.data.stages else []


def evaluate_run(
    run_dir: str | Path, split: str = "test", n_boot: int = 1000, data_root: str | Path | None = None
) -> dict[str, Any]:
    """Score a run's best model on ``split`` of its data; writes ``metrics-<split>.json`` and a report."""
    if n_boot < 1:
        raise ConfigError(f"--n-boot must be at least 1; got {n_boot}")
    run_dir = Path(run_dir)
    root = run_data_root(run_dir, data_root)
    cfg = _run_config(run_dir)
    model = load_run_model(run_dir)
    ds = ShardDataset(root, split, Compose(run_stages(cfg, root)))
    if len(ds) == 0:
        raise DataError(root / "manifest.csv", f"no items in split {split!r}")
    check_fits(model, ds.spec, f"the model of {run_dir}")
    task = task_for(ds.spec)
    report = evaluate_model(model, ds, task, n_boot, cfg.report_by)
    write_json(run_dir / f"metrics-{split}.json", report)
    data = RunData(ds.spec, task, ds, ds, ds)
    sizes = [{"split": split, "items": len(ds), "subjects": len(ds.subjects)}]
    write_run_report(
        run_dir, f"Evaluation on {split}", {"model": report}, data, [], stem=f"report-{split}", split_sizes=sizes
    )
    return report


def write_run_report(
    out: Path,
    title: str,
    reports: dict[str, dict[str, Any]],
    data: RunData,
    notes: list[str],
    *,
    router: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    layer_names: dict[str, list[str]] | None = None,
    history: Any = None,
    stem: str = "report",
    differences: dict[str, Any] | None = None,
    split_sizes: list[dict[str, Any]] | None = None,
) -> None:
    """Side-by-side table (metrics with subject-bootstrap CIs and their unit counts, size, FLOPs, latency)."""
    from .report import write_task_report

    if not is_main():
        return
    write_task_report(
        out, title, reports, data.task, notes, split_sizes=split_sizes or _split_sizes(data), router=router,
        layer_names=layer_names, history=history, stem=stem, differences=differences,
    )  # fmt: skip


def _split_sizes(data: RunData) -> list[dict[str, Any]]:
    return [{"split": role, "items": len(ds), "subjects": len(ds.subjects)} for role, ds in data.splits().items()]


def config_hash(cfg: RunConfig) -> str:
    return sha256_json(to_dict(cfg))
