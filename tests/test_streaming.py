"""StreamingRunner gives the same predictions as windows cut offline from the same recording."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from biokd.export.streaming import StreamingRunner, offline_windows


class _EEGNet(nn.Module):
    """Stand-in classifier on (B, C, T)."""

    input_keys = ("eeg",)

    def __init__(self, n_chans: int = 3, n_outputs: int = 4):
        super().__init__()
        self.config = {"n_chans": n_chans, "n_outputs": n_outputs}
        self.conv = nn.Conv1d(n_chans, 8, 9, stride=4)
        self.head = nn.Linear(8, n_outputs)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(eeg)).mean(-1))


class _GlucoseNet(nn.Module):
    """Stand-in forecaster on (B, 6, history) with an LSTM."""

    input_keys = ("glucose_inputs",)

    def __init__(self, horizons: int = 2):
        super().__init__()
        self.config = {"horizons": horizons}
        self.lstm = nn.LSTM(6, 8, batch_first=True)
        self.head = nn.Linear(8, horizons)

    def forward(self, glucose_inputs: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(glucose_inputs.transpose(1, 2))
        return self.head(h[:, -1])


def _irregular_chunks(signal: np.ndarray, rng: np.random.Generator, largest: int) -> list[np.ndarray]:
    cuts = np.cumsum(rng.integers(0, largest, size=signal.shape[-1]))  # zero-length chunks included
    cuts = cuts[cuts < signal.shape[-1]]
    return np.split(signal, cuts, axis=-1)


def _offline(model: nn.Module, windows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(windows)).numpy()


@pytest.fixture(scope="module")
def eeg_model() -> nn.Module:
    torch.manual_seed(0)
    return _EEGNet().eval()


def test_torch_stream_equals_offline_windows(eeg_model: nn.Module) -> None:
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((3, 1000)).astype(np.float32)
    runner = StreamingRunner(eeg_model, window=128, hop=48)
    preds = list(runner.run(_irregular_chunks(signal, rng, 150)))
    windows = offline_windows(signal, 128, 48)
    assert len(preds) == len(windows) == (1000 - 128) // 48 + 1
    assert [p.start for p in preds] == list(range(0, 1000 - 128 + 1, 48))
    assert all(p.stop - p.start == 128 for p in preds)
    np.testing.assert_allclose(np.stack([p.output for p in preds]), _offline(eeg_model, windows), atol=1e-6)


def test_onnx_session_stream_equals_offline(eeg_model: nn.Module, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="export extra not installed")
    from biokd.export.onnx import export_onnx

    path = export_onnx(eeg_model, (torch.randn(2, 3, 100),), tmp_path / "eeg.onnx", ["eeg"], ["logits"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    signal = rng.standard_normal((3, 700)).astype(np.float32)
    runner = StreamingRunner(session, window=100, hop=30)
    preds = [p for chunk in _irregular_chunks(signal, rng, 90) for p in runner.push(chunk)]
    windows = offline_windows(signal, 100, 30)
    offline = session.run(None, {"eeg": windows})[0]
    assert len(preds) == len(windows) == 21
    np.testing.assert_allclose(np.stack([p.output for p in preds]), offline, atol=1e-5)
    # the ONNX session and the PyTorch model agree through the stream too
    np.testing.assert_allclose(offline, _offline(eeg_model, windows), atol=1e-4)


def test_cgm_stream_one_reading_at_a_time() -> None:
    torch.manual_seed(1)
    model = _GlucoseNet().eval()
    rng = np.random.default_rng(2)
    stream = rng.standard_normal((6, 60)).astype(np.float32)  # 5 hours of 5-minute slots
    runner = StreamingRunner(model, window=12, hop=1)
    preds = [p for t in range(60) for p in runner.push(stream[:, t : t + 1])]
    assert len(preds) == 60 - 12 + 1
    np.testing.assert_allclose(
        np.stack([p.output for p in preds]), _offline(model, offline_windows(stream, 12, 1)), atol=1e-6
    )


def test_hop_longer_than_window_and_reset(eeg_model: nn.Module) -> None:
    signal = np.random.default_rng(3).standard_normal((3, 500)).astype(np.float32)
    runner = StreamingRunner(eeg_model, window=64, hop=100)
    first = runner.push(signal)
    assert [p.start for p in first] == [0, 100, 200, 300, 400]
    runner.reset()
    again = runner.push(signal[:, :300]) + runner.push(signal[:, 300:])
    np.testing.assert_array_equal(np.stack([p.output for p in first]), np.stack([p.output for p in again]))


class _TimeFirst(nn.Module):
    """The same classifier reading (B, T, C) windows."""

    input_keys = ("eeg",)

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        return self.inner(eeg.transpose(1, 2))


def test_time_axis_and_dict_inputs(eeg_model: nn.Module) -> None:
    signal = np.random.default_rng(4).standard_normal((3, 300)).astype(np.float32)
    by_dict = StreamingRunner(eeg_model, window=100, hop=50).push({"eeg": signal})
    time_first = StreamingRunner(_TimeFirst(eeg_model), window=100, hop=50, time_axis=0).push(signal.T.copy())
    assert len(by_dict) == len(time_first) == 5
    np.testing.assert_allclose(np.stack([p.output for p in by_dict]), np.stack([p.output for p in time_first]))


def test_bad_chunks_are_refused(eeg_model: nn.Module) -> None:
    runner = StreamingRunner(eeg_model, window=100, hop=50)
    runner.push(np.zeros((3, 10), np.float32))
    with pytest.raises(ValueError, match="does not match"):
        runner.push(np.zeros((4, 10), np.float32))
    with pytest.raises(ValueError, match="lacks inputs"):
        runner.push({"ecg": np.zeros((3, 10), np.float32)})
    with pytest.raises(ValueError, match="window and hop"):
        StreamingRunner(eeg_model, window=0, hop=1)
