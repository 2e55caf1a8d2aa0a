"""Continual learning across sites on a preprocessed ABIDE store (FORGE's regime, kept small and CPU-fast).

Sites arrive in a configured order. ``replay``: after each site the model is frozen as the teacher of the next,
trained through :class:`biokd.distill.Distiller` with the task loss, logit KD and relational KD on graph
embeddings; each batch adds replayed items from an exemplar memory and from an FCM-VAE fitted per site, and
replayed items carry the frozen teacher's outputs cached when they were stored or generated. Against
``finetune`` (sequential, no replay: the lower bound) and ``joint`` (all sites seen so far, pooled: the upper
bound). Each site's ``train`` items train, its ``test`` items score (accuracy), giving the matrix ``acc[i, j]``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import write_json
from ..data.reader import ShardDataset
from ..distill.distiller import Distiller
from ..distill.terms import KD, Alignment, TaskLoss
from ..errors import ConfigError, DataError
from ..tasks import task_for
from ..trainer import seed_everything
from .continual import FCMVAE, ExemplarMemory, continual_metrics, train_fcm_vae
from .models import BrainNetCNN

REGIMES = ("finetune", "replay", "joint")


@dataclass
class ContinualConfig:
    sites: list[str] = field(default_factory=list)  # the order; empty = sorted site names
    regimes: list[str] = field(default_factory=lambda: list(REGIMES))
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    memory: int = 64  # exemplar memory capacity (items, all sites)
    generated_per_class: int = 16  # FCM-VAE samples per class and past site
    replay_batch: int = 16
    vae_epochs: int = 20
    kd_weight: float = 0.4  # FORGE's beta
    relational_weight: float = 0.3
    temperature: float = 2.0
    student: dict[str, Any] = field(default_factory=dict)  # BrainNetCNN kwargs
    seed: int = 0


def load_sites(root: str | Path, order: Sequence[str] = ()) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``{site: {"train"|"test": {"fc", "label"}}}`` from a store (the store's train/val items train)."""
    ds = ShardDataset(root)
    if "fc" not in ds.array_keys:
        raise DataError(Path(root) / "protocol.json", "continual learning needs stored 'fc' (not a group stage)")
    sites = ds.manifest["site"].astype(str).to_numpy()
    order = list(order) or sorted(set(sites))
    if unknown := sorted(set(order) - set(sites)):
        raise ConfigError(f"continual sites {unknown} are not in the store (sites: {sorted(set(sites))})")
    fc = np.stack([ds.array(s, "fc")[r] for s, r in zip(ds.manifest["shard"], ds.manifest["row"], strict=True)])
    labels = ds.labels.astype(np.int64)
    test = ds.manifest["split"].to_numpy() == "test"
    out = {}
    for site in order:
        here = sites == site
        parts = {"train": here & ~test, "test": here & test}
        if not parts["train"].any() or not parts["test"].any():
            raise DataError(Path(root) / "manifest.csv", f"site {site} needs training and test subjects")
        out[site] = {k: {"fc": fc[m].astype(np.float32), "label": labels[m]} for k, m in parts.items()}
    return out


def _batches(n: int, size: int, gen: torch.Generator):
    order = torch.randperm(n, generator=gen)
    return [order[i : i + size] for i in range(0, n, size)]


@torch.no_grad()
def accuracy(model: torch.nn.Module, fc: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    logits = model(torch.as_tensor(fc)).reshape(-1)
    return float(((logits > 0).long().numpy() == labels).mean())


def _train_plain(model, fc, labels, task, cfg: ContinualConfig, gen) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x, y = torch.as_tensor(fc), torch.as_tensor(labels)
    for _ in range(cfg.epochs):
        model.train()
        for idx in _batches(len(x), cfg.batch_size, gen):
            loss = task.loss(model(x[idx]), {"label": y[idx]})
            opt.zero_grad()
            loss.backward()
            opt.step()


def _terms(cfg: ContinualConfig) -> list:
    return [
        TaskLoss(name="task"),
        KD(name="kd", weight=cfg.kd_weight, temperature=cfg.temperature),
        Alignment(name="relational", weight=cfg.relational_weight, metric="relational", teacher=["embedding"],
                  student="embedding"),
    ]  # fmt: skip


def _train_replay(model, teacher, fc, labels, task, cfg: ContinualConfig, pool: dict[str, np.ndarray], gen):
    """One site with the frozen ``teacher``: current items (live teacher) + replayed items (cached outputs)."""
    distiller = Distiller(model, teacher, _terms(cfg), task)
    x, y = torch.as_tensor(fc), torch.as_tensor(labels)
    distiller.setup({"fc": x[:2], "label": y[:2]})
    opt = torch.optim.Adam([*model.parameters(), *distiller.extra_parameters()], lr=cfg.lr)
    n_pool = len(pool["fc"])
    for _ in range(cfg.epochs):
        distiller.train()
        for idx in _batches(len(x), cfg.batch_size, gen):
            batch = {"fc": x[idx], "label": y[idx]}
            t_out = distiller.teacher_targets(batch)
            pick = torch.randint(0, n_pool, (cfg.replay_batch,), generator=gen).numpy()
            batch = {"fc": torch.cat([batch["fc"], torch.as_tensor(pool["fc"][pick])]),
                     "label": torch.cat([batch["label"], torch.as_tensor(pool["label"][pick])])}  # fmt: skip
            t_out = {k: torch.cat([v, torch.as_tensor(pool[k][pick])]) for k, v in t_out.items()}
            loss, _ = distiller.training_step(batch, t_out)
            opt.zero_grad()
            loss.backward()
            opt.step()


@torch.no_grad()
def _cached_outputs(teacher, fc: np.ndarray, task) -> dict[str, np.ndarray]:
    """What the frozen teacher says about items to replay: its logits and graph embedding, as the terms read them."""
    probe = Distiller(copy.deepcopy(teacher), teacher, _terms(ContinualConfig()), task)
    out = probe.teacher_targets({"fc": torch.as_tensor(fc)})
    return {k: v.numpy() for k, v in out.items()}


def run_regime(regime: str, data, cfg: ContinualConfig, spec) -> np.ndarray:
    """The (T, T) accuracy matrix of one regime."""
    if regime not in REGIMES:
        raise ConfigError(f"continual regime {regime!r} is not one of {', '.join(REGIMES)}")
    seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    task = task_for(spec)
    sites = list(data)
    n_rois = spec.input("fc").shape[0]
    model = BrainNetCNN(n_rois, 1, **cfg.student)
    init = copy.deepcopy(model.state_dict())
    acc = np.zeros((len(sites), len(sites)))
    memory = ExemplarMemory(cfg.memory, "reservoir", cfg.seed)
    generated: list[dict[str, np.ndarray]] = []
    for i, site in enumerate(sites):
        train = data[site]["train"]
        if regime == "joint":
            model.load_state_dict(init)
            fc = np.concatenate([data[s]["train"]["fc"] for s in sites[: i + 1]])
            y = np.concatenate([data[s]["train"]["label"] for s in sites[: i + 1]])
            _train_plain(model, fc, y, task, cfg, gen)
        elif regime == "finetune" or i == 0:
            _train_plain(model, train["fc"], train["label"], task, cfg, gen)
        else:
            teacher = copy.deepcopy(model).eval()
            pool = _replay_pool(memory, generated)
            _train_replay(model, teacher, train["fc"], train["label"], task, cfg, pool, gen)
        if regime == "replay":  # the model now frozen is the next site's teacher: cache its outputs
            frozen = copy.deepcopy(model).eval()
            memory.add(train["fc"], train["label"], site, **_cached_outputs(frozen, train["fc"], task))
            vae = FCMVAE(n_rois, d_model=32, n_heads=2, latent_dim=16, rank=4)
            train_fcm_vae(vae, train["fc"], train["label"], epochs=cfg.vae_epochs, seed=cfg.seed + i)
            with torch.no_grad():
                labels = np.repeat([0, 1], cfg.generated_per_class)
                fake = vae.sample(len(labels), labels.tolist(), gen).numpy().astype(np.float32)
            generated.append({"fc": fake, "label": labels, **_cached_outputs(frozen, fake, task)})
        for j in range(i + 1):
            acc[i, j] = accuracy(model, data[sites[j]]["test"]["fc"], data[sites[j]]["test"]["label"])
    return acc


def _replay_pool(memory: ExemplarMemory, generated: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    kept = memory.arrays()
    parts = [{k: v for k, v in kept.items() if k != "site"}, *generated]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def run_continual(root: str | Path, out: str | Path, cfg: ContinualConfig | None = None) -> dict[str, Any]:
    """Every regime's accuracy matrix with AAA, BWT, forgetting and last average accuracy; ``continual.json``."""
    cfg = cfg or ContinualConfig()
    ds = ShardDataset(root, "test")
    data = load_sites(root, cfg.sites)
    results: dict[str, Any] = {
        "sites": list(data),
        "n_test_subjects": {s: len(d["test"]["label"]) for s, d in data.items()},
    }
    for regime in cfg.regimes:
        acc = run_regime(regime, data, cfg, ds.spec)
        results[regime] = {"accuracy_matrix": acc.tolist(), **continual_metrics(acc)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "continual.json", results)
    return results
