"""KD temperature schedule: the seed work's annealing as a config of the kd term, fed by the trainer's progress."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch import nn

from biokd.config import from_dict
from biokd.data.spec import TargetSpec
from biokd.distill import losses
from biokd.distill.distiller import Distiller
from biokd.distill.terms import KD, Step, TaskLoss, Term
from biokd.errors import ConfigError
from biokd.tasks import task_for
from biokd.trainer import TrainConfig, fit

BINARY = task_for(TargetSpec("binary", classes=["negative", "positive"], positive="positive"))


def kd(**fields) -> KD:
    return from_dict(KD, {"name": "kd", **fields}, "distill.terms[0]")


def test_seed_schedule_holds_then_falls_linearly_then_holds():
    term = kd(temperature=2.5, temperature_end=1.0, anneal=[0.05, 0.2])
    # Chiumento et al. over 100 epochs: 2.5 up to epoch 5, then 0.1 less per epoch, 1.0 from epoch 20 on
    expected = [2.5 if e < 5 else max(1.0, 2.5 - 0.1 * (e - 5)) for e in range(100)]
    assert [term.temperature_at(e / 100) for e in range(100)] == pytest.approx(expected)
    assert kd(temperature=3.0).temperature_at(0.7) == 3.0  # no temperature_end: constant, as before
    assert Term.from_config({"name": "k", "kind": "kd", "temperature_end": 2.0}, "t").temperature_at(0.5) == 3.0


@pytest.mark.parametrize("fields", [{"anneal": [0.5, 0.2]}, {"anneal": [0.1]}, {"anneal": [0.0, 1.5]}])
def test_bad_anneal_window_is_a_config_error(fields):
    with pytest.raises(ConfigError, match="anneal must be"):
        kd(temperature_end=1.0, **fields).check(None, BINARY)
    with pytest.raises(ConfigError, match="temperatures must be positive"):
        kd(temperature_end=0.0).check(None, BINARY)


def test_value_uses_the_temperature_of_the_step_progress():
    term = kd(temperature=2.5, temperature_end=1.0, anneal=[0.05, 0.2])
    student, teacher = torch.tensor([[0.3], [-1.2]]), torch.tensor([[2.0], [-0.5]])
    for progress, temperature in ((0.0, 2.5), (0.1, 2.0), (0.5, 1.0)):
        step = Step(student, {}, {"output": teacher}, {}, BINARY, None, progress)  # type: ignore[arg-type]
        assert float(term.value(step)) == pytest.approx(float(losses.binary_kd(student, teacher, temperature)))


class Linear(nn.Module):
    input_keys = ("x",)

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Linear(3, 1)

    def forward(self, x):
        return self.net(x)


class Toy(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int, prefix: str):
        rng = np.random.default_rng(seed)
        self.y = np.arange(n) % 2
        self.x = torch.from_numpy((rng.normal(size=(n, 3)) + self.y[:, None]).astype(np.float32))
        self.subjects = [f"{prefix}{i}" for i in range(n)]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "label": int(self.y[i]), "subject": self.subjects[i], "index": i}


@dataclass
class RecordingKD(KD):
    seen: list[float] = field(default_factory=list)

    def value(self, step):
        self.seen.append(step.progress)
        return super().value(step)


def test_the_trainer_passes_epoch_progress_to_the_terms(tmp_path):
    term = RecordingKD("kd", temperature=2.5, temperature_end=1.0)
    distiller = Distiller(Linear(0), Linear(1), [TaskLoss("task"), term], BINARY)
    cfg = TrainConfig(epochs=4, batch_size=8, progress=False, select_metric="auroc")
    fit(distiller, Toy(16, 0, "a"), Toy(8, 1, "b"), cfg, tmp_path, BINARY, log=lambda m: None)
    assert sorted(set(term.seen)) == [0.0, 0.25, 0.5, 0.75] and len(term.seen) == 8  # 2 batches per epoch
