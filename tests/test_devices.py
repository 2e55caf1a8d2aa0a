"""A model on one device is fed on that device: every evaluation path moves the batch to the model.

CI has no GPU, so the second device is torch's ``meta`` device: a model there refuses CPU inputs exactly as
a CUDA model does ("Tensor on device meta is not on the expected device cpu"). Copies back to the CPU of
meta results (which hold no data) are stubbed with zeros.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from biokd.data.reader import ShardDataset
from biokd.data.spec import DataSpec, InputSpec, TargetSpec
from biokd.data.store import SubjectItems, build_store
from biokd.distill.distiller import Distiller
from biokd.distill.terms import Feature, TaskLoss
from biokd.eeg.mic import MiC
from biokd.tasks import task_for

SPEC = DataSpec(
    "tiny",
    [InputSpec("eeg", [4, 400], ["channel", "time"], sfreq=200.0)],
    TargetSpec("classification", classes=["a", "b"]),
)


def items(subject: str, paths: Sequence[Path], protocol: Mapping[str, Any]) -> SubjectItems:
    x = np.random.default_rng(0).normal(size=(4, 4, 400)).astype(np.float32)
    return SubjectItems({"eeg": x}, [{"subject": subject, "label": i % 2, "split": "test"} for i in range(4)])


@pytest.fixture
def on_meta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ShardDataset:
    (tmp_path / "s1.txt").write_text("1")
    build_store(tmp_path / "d", {"s1": [tmp_path / "s1.txt"]}, items, {}, SPEC)
    real_cpu = torch.Tensor.cpu
    monkeypatch.setattr(
        torch.Tensor, "cpu", lambda self, *a, **k: torch.zeros(self.shape) if self.is_meta else real_cpu(self, *a, **k)
    )
    return ShardDataset(tmp_path / "d", "test")


def stub_cpu(real_cpu: Any) -> Any:
    """``Tensor.cpu`` that gives zeros for a meta tensor (which holds no data) and copies anything else."""
    return lambda self, *a, **k: torch.zeros(self.shape) if self.is_meta else real_cpu(self, *a, **k)


def small_mic() -> MiC:
    return MiC(n_chans=4, n_times=400, n_outputs=2, d_model=16, depth=1)


def test_the_meta_device_catches_a_mismatch() -> None:
    with pytest.raises(RuntimeError, match="expected device"):
        small_mic().to("meta")(torch.zeros(1, 4, 400))


def test_predictions_follow_the_model(on_meta: ShardDataset) -> None:
    from biokd.pipeline import predictions

    outputs, _, subjects = predictions(small_mic().to("meta"), on_meta, task_for(SPEC))
    assert outputs.shape == (4, 2) and subjects == ["s1"] * 4


def test_router_weights_follow_the_distiller(on_meta: ShardDataset) -> None:
    from biokd.pipeline import router_weights

    teacher = small_mic()
    terms = [TaskLoss("task"), Feature("f", teacher=["encoder.0", "mimic"], student="mimic")]
    distiller = Distiller(small_mic(), teacher, terms, task_for(SPEC))
    distiller.setup(torch.utils.data.default_collate([on_meta[0], on_meta[1]]))
    weights = router_weights(distiller.to("meta"), on_meta)
    assert weights["f"][0].shape == (4, 2)


def test_glucose_forecasts_follow_the_model() -> None:
    from biokd.glucose.demo import predict
    from biokd.glucose.gluconet import GlucoNet

    real_cpu = torch.Tensor.cpu
    try:
        torch.Tensor.cpu = stub_cpu(real_cpu)
        out = predict(GlucoNet(n_outputs=2).to("meta"), torch.full((3, 6, 36), 120.0))
    finally:
        torch.Tensor.cpu = real_cpu
    assert out.shape == (3, 2)
