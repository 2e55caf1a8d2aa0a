"""One training loop for teachers, students and distillers.

AdamW with per-group learning rates, cosine schedule with warm-up, mixed precision on GPUs, gradient
clipping, a checkpoint every epoch, best-epoch selection on a validation metric and exact resume: every
epoch reseeds all generators from ``(seed, epoch)``, so a run resumed from its last checkpoint ends with
the same weights as one that was never interrupted.

Under ``torchrun`` (see :mod:`biokd.parallel`) the learner's training step runs through
DistributedDataParallel: each rank reads ``batch_size / world_size`` items of every global batch (a
DistributedSampler over the same per-epoch permutation a single process would use), losses and validation
outputs are gathered across ranks, and only rank 0 writes checkpoints and history.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import parallel
from ._console import live_progress_ok
from ._io import load_torch, save_torch, write_json
from .batch import model_inputs, to_device
from .errors import ConfigError, WeightsError
from .splits import check_no_leakage

if TYPE_CHECKING:
    from .tasks import Task


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    #: Learning rate of a pretrained backbone (teacher fine-tuning); ``None`` = ``lr``.
    backbone_lr: float | None = None
    weight_decay: float = 0.05
    min_lr: float = 1e-6
    warmup_epochs: int = 0
    grad_clip: float | None = 1.0
    amp: bool = True
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    #: A validation metric of the task (``auto``: the task's default, e.g. κ for classification, RMSE for forecasts).
    select_metric: str = "auto"
    #: "subject": train, validation and test subjects must differ (refuses leaks). "time": within-subject
    #: forecasting protocols (OhioT1DM's challenge) that split each subject's record by time, in order.
    split_by: Literal["subject", "time"] = "subject"
    max_batches_per_epoch: int | None = None
    progress: bool = True
    #: Compile the student and teacher with ``torch.compile`` (worth it on GPUs for long runs).
    compile: bool = False
    #: Pinned host memory for the loaders: ``auto`` = on when training on CUDA.
    pin_memory: Literal["auto", "on", "off"] = "auto"
    #: Experiment tracking (opt-in): ``tensorboard`` event files or an ``mlflow`` file store in the run folder.
    track: Literal["none", "tensorboard", "mlflow"] = "none"
    #: MLflow tracking URI; ``None`` = a local file store ``<run>/mlruns`` (no server).
    track_uri: str | None = None

    def __post_init__(self) -> None:
        from .errors import ConfigError

        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": math.isfinite(self.lr) and self.lr > 0,
            "weight_decay": math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            "min_lr": math.isfinite(self.min_lr) and self.min_lr >= 0,
            "warmup_epochs": 0 <= self.warmup_epochs < max(self.epochs, 1) or self.warmup_epochs == 0,
            "num_workers": self.num_workers >= 0,
            "backbone_lr": self.backbone_lr is None or (math.isfinite(self.backbone_lr) and self.backbone_lr > 0),
            "grad_clip": self.grad_clip is None or self.grad_clip > 0,
            "max_batches_per_epoch": self.max_batches_per_epoch is None or self.max_batches_per_epoch >= 1,
        }
        if bad := [k for k, ok in checks.items() if not ok]:
            raise ConfigError(f"train.{bad[0]}: invalid value {getattr(self, bad[0])!r} (see the TrainConfig docs)")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"train.device: {dev!r} is not a device; use auto, cpu, cuda, cuda:N or mps")


class Learner(Protocol):
    """What :func:`fit` trains: a supervised model wrapper or a :class:`~biokd.distill.distiller.Distiller`."""

    def training_step(self, batch: dict, teacher_out: dict | None = None) -> tuple[torch.Tensor, dict]: ...
    def predict(self, batch: dict) -> torch.Tensor: ...


class Supervised(nn.Module):
    """A model trained on its task loss alone (teacher fine-tuning, or a student without a teacher)."""

    def __init__(self, model: nn.Module, task: Task, label_smoothing: float = 0.0):
        super().__init__()
        self.model, self.task, self.label_smoothing = model, task, label_smoothing

    def predict(self, batch: dict) -> torch.Tensor:
        return self.model(*model_inputs(self.model, batch))

    forward = predict

    def training_step(self, batch: dict, teacher_out: dict | None = None) -> tuple[torch.Tensor, dict]:
        loss = self.task.loss(self.predict(batch), batch, self.label_smoothing)
        return loss, {"loss": float(loss.detach())}


@dataclass
class FitResult:
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} asked for, but this torch sees no CUDA device")
    if name in ("auto", "cuda"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # under torchrun each process takes the GPU of its local rank
        return torch.device("cuda", parallel.local_rank()) if parallel.is_distributed() else torch.device("cuda")
    return torch.device(name)


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def trainable_state(learner: nn.Module) -> dict[str, torch.Tensor]:
    """State of the learner without a frozen teacher (which never changes and may be huge)."""
    return {k: v for k, v in learner.state_dict().items() if not k.startswith("teacher.")}


def exported_model(learner: nn.Module) -> nn.Module:
    """The model a run delivers: the student of a Distiller, the model of a Supervised learner."""
    return learner.student if hasattr(learner, "student") else learner.model  # type: ignore[return-value]


def param_groups(learner: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: backbone at ``backbone_lr`` when the model has ``backbone_parameters()``, rest at ``lr``."""
    model = exported_model(learner)
    trainable = [p for p in learner.parameters() if p.requires_grad]
    if cfg.backbone_lr is None or not hasattr(model, "backbone_parameters"):
        return [{"params": trainable, "lr": cfg.lr}]
    backbone = {id(p) for p in model.backbone_parameters()}
    return [
        {"params": [p for p in trainable if id(p) in backbone], "lr": cfg.backbone_lr},
        {"params": [p for p in trainable if id(p) not in backbone], "lr": cfg.lr},
    ]


def cosine_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = cfg.warmup_epochs * steps_per_epoch
    floors = [cfg.min_lr / g["lr"] if g["lr"] > 0 else 0.0 for g in optimizer.param_groups]

    def factor(step: int, floor: float) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda s, f=f: factor(s, f) for f in floors])


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return torch.utils.data.default_collate(items)


@torch.no_grad()
def predict_dataset(
    learner: nn.Module,
    dataset: Dataset,
    batch_size: int = 64,
    device: torch.device | None = None,
    target_key: str = "label",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Outputs, targets and subjects of ``learner`` over ``dataset`` in order, on the learner's device."""
    device = device or model_device(learner)
    learner.eval()
    outs, targets, subjects = [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
        batch = to_device(batch, device)
        outs.append(learner.predict(batch).float().cpu())
        targets.append(batch[target_key].cpu())
        subjects.extend(batch["subject"])
    return torch.cat(outs).numpy(), torch.cat(targets).numpy(), subjects


def _iterate(loader: Iterable, total: int, enabled: bool, description: str, status: dict[str, float]):
    """Batches of ``loader`` under a progress bar showing the running losses (none when not on a terminal)."""
    if not enabled or not os.isatty(2) or not live_progress_ok():
        yield from loader
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, TextColumn("{task.fields[losses]}"), transient=True) as bar:
        task = bar.add_task(description, total=total, losses="")
        for batch in loader:
            yield batch
            shown = " ".join(f"{k} {v:.3f}" for k, v in list(status.items())[:4])
            bar.update(task, advance=1, losses=shown)


class RankShare(DistributedSampler):
    """A DistributedSampler whose ranks share each global batch: rank r of w takes every w-th item of the epoch's
    seeded permutation, so the ranks' parts of a global batch make up exactly one process's batch."""

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=gen).tolist()
        order += order[: self.total_size - len(order)]  # padded like DistributedSampler (never reached: see fit)
        return iter(order[self.rank : self.total_size : self.num_replicas])


class _Step(nn.Module):
    """The learner's training step as a module's forward, so DistributedDataParallel sees it (and syncs grads)."""

    def __init__(self, learner: nn.Module):
        super().__init__()
        self.learner = learner

    def forward(self, batch: dict, teacher_out: dict | None = None) -> tuple[torch.Tensor, dict]:
        return self.learner.training_step(batch, teacher_out)


def _wrap(learner: nn.Module, device: torch.device) -> nn.Module:
    step = _Step(learner)
    if not parallel.is_distributed():
        return step
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    # a router's probe may not reach the loss on every step: then DDP must look for parameters a step left unused
    unused = bool(getattr(learner, "routers", None))
    return DistributedDataParallel(step, device_ids=ids, find_unused_parameters=unused)


def _compile(learner: nn.Module) -> None:
    """``torch.compile`` the models in place (state-dict keys unchanged, so checkpoints stay portable)."""
    for name in ("student", "teacher", "model"):
        module = getattr(learner, name, None)
        if isinstance(module, nn.Module):
            module.compile()


def predict_all(
    learner: nn.Module, dataset: Dataset, batch_size: int, device: torch.device, target_key: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:func:`predict_dataset` with the items shared out across ranks and gathered back in order."""
    if not parallel.is_distributed():
        return predict_dataset(learner, dataset, batch_size, device, target_key)
    from torch.utils.data import Subset

    mine = list(range(parallel.rank(), len(dataset), parallel.world_size()))
    part = predict_dataset(learner, Subset(dataset, mine), batch_size, device, target_key) if mine else None
    gathered = [(i, p) for i, p in parallel.gather_objects((mine, part)) if p is not None]
    order = np.argsort(np.concatenate([np.asarray(i) for i, _ in gathered]), kind="stable")
    outputs = np.concatenate([p[0] for _, p in gathered])[order]
    targets = np.concatenate([p[1] for _, p in gathered])[order]
    subjects = [s for _, p in gathered for s in p[2]]
    return outputs, targets, [subjects[k] for k in order]


def fit(
    learner: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset,
    cfg: TrainConfig,
    run_dir: str | Path,
    task: Task,
    *,
    teacher_cache: Any = None,
    resume: bool = True,
    log: Callable[[str], None] = print,
    stop_after_epoch: int | None = None,
) -> FitResult:
    """Train ``learner`` for ``cfg.epochs``; checkpoints go to ``run_dir/checkpoints``.

    ``task.val_scores`` scores the validation set; ``cfg.select_metric`` (a metric of the task) picks the best
    epoch. ``teacher_cache`` (see :mod:`biokd.distill.cache`) replaces the live teacher; a training set read
    through random transforms cannot use one. ``stop_after_epoch`` simulates an interruption (tests).
    """
    from .tracking import open_tracker

    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    if cfg.split_by == "subject" and hasattr(train_ds, "subjects") and hasattr(val_ds, "subjects"):
        check_no_leakage({"train": train_ds.subjects, "val": val_ds.subjects})
    select_metric = task.default_metric if cfg.select_metric == "auto" else cfg.select_metric
    select_mode = task.check_metric(select_metric)
    target_key = task.key
    parallel.init()
    world, main = parallel.world_size(), parallel.is_main()
    if cfg.batch_size % world:
        raise ConfigError(f"train.batch_size {cfg.batch_size} (the global batch) must divide by {world} processes")
    if not main:
        log = _silent
    device = pick_device(cfg.device)
    learner.to(device)
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    pin = cfg.pin_memory == "on" or (cfg.pin_memory == "auto" and device.type == "cuda")
    drop_last = len(train_ds) > cfg.batch_size
    common: dict[str, Any] = {"num_workers": cfg.num_workers, "collate_fn": collate, "pin_memory": pin}

    def loader(epoch: int) -> DataLoader:
        # one process or many, the same seeded permutation per epoch: rank r of w reads every w-th item of it
        sampler = RankShare(train_ds, world, parallel.rank(), shuffle=True, seed=cfg.seed * 100_003)
        sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # worker seeds; the global RNG is untouched
        return DataLoader(
            train_ds, cfg.batch_size // world, sampler=sampler, generator=gen, drop_last=drop_last, **common
        )

    seed_everything(cfg.seed)
    if hasattr(learner, "setup") and not getattr(learner, "_ready", True):
        learner.setup(to_device(next(iter(loader(0))), device))
    global_batches = len(train_ds) // cfg.batch_size if drop_last else 1
    steps = min(len(loader(0)), global_batches, cfg.max_batches_per_epoch or len(train_ds))
    optimizer = torch.optim.AdamW(param_groups(learner, cfg), weight_decay=cfg.weight_decay)
    scheduler = cosine_schedule(optimizer, cfg, steps)

    start, history, best = 0, [], {"epoch": -1, "metrics": {}, "score": None}
    resumed_from = None
    last = ckpt_dir / "last.pt"
    if resume and last.is_file():
        state = load_torch(last)
        result = learner.load_state_dict(state["learner"], strict=False)
        wrong = [k for k in result.missing_keys if not k.startswith("teacher.")] + result.unexpected_keys
        if wrong:
            raise WeightsError(f"{last}: does not fit this run's model ({', '.join(wrong[:5])} ...)")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start, history, best = state["epoch"] + 1, json.loads(state["history"]), json.loads(state["best"])
        resumed_from = state["epoch"]
        log(f"resumed from {last} after epoch {resumed_from + 1}/{cfg.epochs}")

    augmented = bool(getattr(getattr(train_ds, "transforms", None), "random", False))
    use_cache = teacher_cache is not None and not augmented
    if teacher_cache is not None and not use_cache:
        log("teacher cache not used: training inputs are augmented, so the live teacher sees them instead")
    if cfg.compile:
        _compile(learner)
    step_module = _wrap(learner, device)
    tracker = open_tracker(cfg.track if main else "none", run_dir, cfg.track_uri)
    for epoch in range(start, cfg.epochs):
        seed_everything(cfg.seed * 1_000 + epoch)
        if hasattr(learner, "progress"):
            learner.progress = epoch / cfg.epochs  # what scheduled distillation terms read (e.g. KD temperature)
        step_module.train()
        sums: dict[str, float] = {}
        n = 0
        status: dict[str, float] = {}
        show = cfg.progress and main
        batches = _iterate(loader(epoch), steps, show, f"epoch {epoch + 1}/{cfg.epochs}", status)
        for i, batch in enumerate(batches):
            if i >= steps:
                break
            batch = to_device(batch, device)
            teacher_out = teacher_cache.lookup(batch["index"], device) if use_cache else None
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                loss, logs = step_module(batch, teacher_out)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            status.update({k: v / n for k, v in sums.items()})
        train_means = parallel.mean_across({k: v / max(n, 1) for k, v in sums.items()}, n)
        outputs, targets, subjects = predict_all(learner, val_ds, cfg.batch_size, device, target_key)
        metrics = task.val_scores(outputs, targets, subjects)
        record = {
            "epoch": epoch + 1,
            **{f"train_{k}": v for k, v in train_means.items()},
            **{f"val_{k}": v for k, v in metrics.items()},
        }
        if hasattr(learner, "last_router_weights") and learner.last_router_weights:
            record["router_weights"] = {k: v.mean(0).tolist() for k, v in learner.last_router_weights.items()}
        history.append(record)
        score = metrics[select_metric]
        better = best["score"] is None or (score > best["score"] if select_mode == "max" else score < best["score"])
        if better:
            best = {"epoch": epoch + 1, "metrics": metrics, "score": score}
            key = "student" if hasattr(learner, "student") else "model"
            if main:
                save_torch(ckpt_dir / "best.pt", {key: exported_model(learner).state_dict(), "epoch": epoch + 1})
        if main:
            save_torch(
                last,
                {
                    "learner": trainable_state(learner),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch,
                    "history": json.dumps(history),
                    "best": json.dumps(best),
                },
            )
            write_json(run_dir / "history.json", history)
        tracker.log_epoch(record)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch" and isinstance(v, float))
        log(f"epoch {epoch + 1}/{cfg.epochs}: {shown}")
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
    tracker.close()
    parallel.barrier()  # the other ranks read best.pt next
    return FitResult(best["epoch"], best["metrics"], history, resumed_from)


def _silent(message: str) -> None:
    """The log of ranks other than 0."""


def load_best(learner: nn.Module, run_dir: str | Path) -> nn.Module:
    """Load the best checkpoint of ``run_dir`` into the learner's delivered model and return that model."""
    state = load_torch(Path(run_dir) / "checkpoints" / "best.pt")
    model = exported_model(learner)
    model.load_state_dict(state["student"] if "student" in state else state["model"])
    return model
