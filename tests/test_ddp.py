"""DistributedDataParallel on CPU: two gloo processes train the same weights as one process with the same
global batch (the teacher cache built once by rank 0, only rank 0 writing files)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

from biokd.data.spec import TargetSpec
from biokd.distill.cache import build_cache
from biokd.distill.distiller import Distiller
from biokd.distill.terms import KD, Feature, TaskLoss
from biokd.parallel import main_first
from biokd.tasks import Classification
from biokd.trainer import TrainConfig, fit

#: Two ranks sum their gradients in another order than one process does: float32 round-off only.
ATOL = 1e-5


class Net(nn.Module):
    """A small model without dropout or batch statistics, so a split batch computes the same gradient."""

    input_keys = ("eeg",)

    def __init__(self, width: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(16, width), nn.GELU()), nn.Linear(width, width))
        self.head = nn.Linear(width, 3)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.layers(eeg.flatten(1))))


class Toy(Dataset):
    def __init__(self, n: int, seed: int, first_subject: int):
        rng = np.random.default_rng(seed)
        self.y = rng.integers(0, 3, n)
        self.x = torch.from_numpy((rng.normal(0, 1, (n, 2, 8)) + self.y[:, None, None]).astype(np.float32))
        self.subject_of = [f"S{first_subject + i // 8:02d}" for i in range(n)]
        self.subjects = sorted(set(self.subject_of))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"eeg": self.x[i], "label": int(self.y[i]), "subject": self.subject_of[i], "index": i}


def train(out: Path) -> tuple[dict, list]:
    """Distil a fixed teacher into a student for 3 epochs of 5 global batches of 12 (cache built first)."""
    torch.set_num_threads(1)
    task = Classification(TargetSpec(kind="classification", classes=["a", "b", "c"]))
    train_ds, val_ds = Toy(66, 0, 0), Toy(21, 1, 20)
    torch.manual_seed(0)
    teacher, student = Net(12), Net(6)
    terms = [
        TaskLoss(name="task"),
        KD(name="kd", temperature=2.0),
        Feature(name="feat", teacher=["layers.0"], student="layers.0"),
    ]
    distiller = Distiller(student, teacher, terms, task)
    distiller.setup(torch.utils.data.default_collate([train_ds[i] for i in range(2)]))
    quiet = lambda m: None  # noqa: E731
    cache = main_first(lambda: build_cache(out / "cache", distiller.teacher_targets, train_ds, {"t": 1}, log=quiet))
    cfg = TrainConfig(epochs=3, batch_size=12, lr=5e-3, device="cpu", progress=False, select_metric="loss")
    result = fit(distiller, train_ds, val_ds, cfg, out / "run", task, teacher_cache=cache, log=quiet)
    return {k: v.detach().clone() for k, v in distiller.state_dict().items()}, result.history


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)}
        | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    state, history = train(Path(out))
    torch.save({"state": state, "history": history}, Path(out) / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    one_state, one_history = train(tmp_path / "one")
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for key, value in one_state.items():
        for r in ranks:
            torch.testing.assert_close(r["state"][key], value, atol=ATOL, rtol=0, msg=key)
    assert not torch.equal(one_state["student.head.weight"], Net(6).head.weight)  # it did train
    written = json.loads((tmp_path / "ddp" / "run" / "history.json").read_text())
    assert [h["epoch"] for h in written] == [1, 2, 3] == [h["epoch"] for h in one_history]
    for ddp_epoch, one_epoch in zip(ranks[0]["history"], one_history, strict=True):
        for key in ("train_loss", "train_kd", "train_feat", "val_loss", "val_balanced_accuracy"):
            assert abs(ddp_epoch[key] - one_epoch[key]) < 1e-4, key
    assert ranks[1]["history"] == ranks[0]["history"]  # the losses were reduced across ranks
    assert not list((tmp_path / "ddp" / "cache").glob(".tmp-shard-*"))
    assert sorted(p.name for p in (tmp_path / "ddp" / "run" / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
