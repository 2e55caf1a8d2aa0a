"""Experiment tracking is opt-in: TensorBoard event files and an MLflow file store in the run folder, read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from biokd.data.spec import TargetSpec
from biokd.tasks import Classification
from biokd.tracking import finish_run, scalars
from biokd.trainer import Supervised, TrainConfig, fit

TASK = Classification(TargetSpec(kind="classification", classes=["a", "b"]))


class Net(nn.Module):
    input_keys = ("eeg",)

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 2)

    def forward(self, eeg):
        return self.fc(eeg.flatten(1))


class Toy(Dataset):
    def __init__(self, n: int, seed: int, first: int):
        rng = np.random.default_rng(seed)
        self.y = rng.integers(0, 2, n)
        self.x = torch.from_numpy((rng.normal(0, 1, (n, 2, 3)) + self.y[:, None, None]).astype(np.float32))
        self.subject_of = [f"S{first + i // 5}" for i in range(n)]
        self.subjects = sorted(set(self.subject_of))

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"eeg": self.x[i], "label": int(self.y[i]), "subject": self.subject_of[i], "index": i}


def _train(run: Path, track: str) -> list[dict]:
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-2, device="cpu", progress=False, track=track)
    result = fit(Supervised(Net(), TASK), Toy(40, 0, 0), Toy(20, 1, 50), cfg, run, TASK, log=lambda m: None)
    (run / "config.yaml").write_text("train:\n  epochs: 3\n")
    (run / "report.md").write_text("# report\n")
    finish_run(track, run, {"train": {"epochs": 3, "lr": 0.01}})
    return result.history


def test_nothing_is_logged_unless_asked(tmp_path: Path) -> None:
    _train(tmp_path, "none")
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "mlruns").exists()


def test_tensorboard_event_files_hold_every_epoch(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = _train(tmp_path, "tensorboard")
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    loss = events.Scalars("train_loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([h["train_loss"] for h in history])
    assert "val_cohen_kappa" in events.Tags()["scalars"]
    assert any("config" in tag for tag in events.Tags()["tensors"])  # text summaries are stored as tensors


def test_mlflow_file_store_has_metrics_params_and_artefacts(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    history = _train(tmp_path, "mlflow")
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("biokd").experiment_id])
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    losses = sorted((m.step, m.value) for m in losses)
    assert [step for step, _ in losses] == [1, 2, 3]
    assert [value for _, value in losses] == pytest.approx([h["train_loss"] for h in history])
    assert run.data.params["train.lr"] == "0.01"
    assert {"config.yaml", "report.md", "history.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert run.info.status == "FINISHED"


def test_router_weights_become_scalars() -> None:
    out = scalars({"epoch": 2, "train_loss": 1.5, "router_weights": {"feat": [0.25, 0.75]}, "note": "x"})
    assert out == {"train_loss": 1.5, "router/feat/0": 0.25, "router/feat/1": 0.75}
