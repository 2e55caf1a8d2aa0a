"""The exportable DFT/STFT of biokd.export.dft equal torch.fft / torch.stft, and export where FFT cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from biokd.export.dft import RFFT, STFT, rfft_basis


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("n", [8, 9, 200, 257])
@pytest.mark.parametrize("norm", [None, "ortho", "forward"])
def test_rfft_equals_torch_fft(n: int, norm: str | None) -> None:
    x = torch.randn(2, 3, n, generator=torch.Generator().manual_seed(n))
    ours = RFFT(n, norm=norm)(x)
    ref = torch.view_as_real(torch.fft.rfft(x, norm=norm))
    assert ours.shape == (2, 3, n // 2 + 1, 2)
    assert _rel_err(ours, ref) < 2e-6


def test_rfft_pads_and_cuts_like_torch() -> None:
    x = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    short = RFFT(64)(x)  # zero-padded to 64
    assert _rel_err(short, torch.view_as_real(torch.fft.rfft(x, n=64))) < 2e-6
    cut = RFFT(32)(x)  # first 32 samples
    assert _rel_err(cut, torch.view_as_real(torch.fft.rfft(x, n=32))) < 2e-6


def test_magnitude_power_phase() -> None:
    x = torch.randn(5, 128, generator=torch.Generator().manual_seed(1))
    spec = torch.fft.rfft(x)
    assert _rel_err(RFFT(128, "magnitude")(x), spec.abs()) < 2e-6
    assert _rel_err(RFFT(128, "power")(x), spec.abs() ** 2) < 4e-6
    phase = RFFT(128, "phase")(x)
    reliable = spec.abs() > 1e-3 * spec.abs().max()  # phase of a ~0 bin is arbitrary
    assert reliable.float().mean() > 0.9
    # compare on the circle so that -pi and pi count as equal
    assert torch.allclose(torch.polar(torch.ones_like(phase), phase)[reliable], torch.sgn(spec)[reliable], atol=1e-4)
    both = RFFT(128, "magnitude_phase")(x)
    assert torch.equal(both[..., 0], RFFT(128, "magnitude")(x))


def test_basis_is_exact_for_a_pure_tone() -> None:
    n, k = 64, 5
    x = torch.cos(2 * torch.pi * k * torch.arange(n, dtype=torch.float64) / n)
    cos, sin = rfft_basis(n, dtype=torch.float64)
    real, imag = x @ cos, -(x @ sin)
    expected = torch.zeros(n // 2 + 1, dtype=torch.float64)
    expected[k] = n / 2
    assert torch.allclose(real, expected, atol=1e-9) and torch.allclose(imag, torch.zeros_like(imag), atol=1e-9)


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("window", ["hann", "rect"])
def test_stft_equals_torch_stft(center: bool, window: str) -> None:
    x = torch.randn(2, 3, 300, generator=torch.Generator().manual_seed(2))
    w = torch.hann_window(32) if window == "hann" else torch.ones(32)
    ref = torch.stft(x.reshape(-1, 300), 32, 8, window=w, center=center, pad_mode="reflect", return_complex=True)
    ref = torch.view_as_real(ref).reshape(2, 3, *ref.shape[1:], 2)
    ours = STFT(32, 8, window=window, center=center)(x)
    assert ours.shape == ref.shape
    assert _rel_err(ours, ref) < 2e-6


def test_bases_stay_out_of_state_dict() -> None:
    layer = nn.Sequential(RFFT(16, "magnitude"), STFT(8, 4))
    assert layer.state_dict() == {}


class _SpectralNet(nn.Module):
    """A stand-in student computing band magnitudes in its graph."""

    input_keys = ("eeg",)

    def __init__(self, spectrum: nn.Module):
        super().__init__()
        self.config = {}
        self.spectrum = spectrum
        self.head = nn.Linear(3 * 33, 2)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        return self.head(self.spectrum(eeg).flatten(1))


class _TorchMagnitude(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(x).abs()


def test_rfft_exports_to_onnx_without_dft_op(tmp_path) -> None:
    onnx = pytest.importorskip("onnx", reason="export extra not installed")
    from biokd.export.onnx import OnnxPredictor, export_onnx

    model = _SpectralNet(RFFT(64, "magnitude")).eval()
    x = torch.randn(3, 3, 64)
    path = export_onnx(model, (x,), tmp_path / "spec.onnx", ["eeg"], ["logits"])
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "DFT" not in ops and "MatMul" in ops
    expected = _SpectralNet(_TorchMagnitude()).eval()
    expected.load_state_dict(model.state_dict())
    with torch.no_grad():
        np.testing.assert_allclose(OnnxPredictor(path)(x.numpy()), expected(x).numpy(), atol=1e-4)


def test_rfft_lowers_to_executorch_where_torch_fft_fails(tmp_path) -> None:
    pytest.importorskip("executorch.exir", reason="export extra not installed")
    from biokd.export import UnsupportedOperationError
    from biokd.export.executorch import ExecuTorchPredictor, export_executorch

    x = torch.randn(1, 3, 64)
    with pytest.raises(UnsupportedOperationError) as info:
        export_executorch(_SpectralNet(_TorchMagnitude()).eval(), (x,), tmp_path / "fft.pte")
    assert info.value.op == "aten.abs" and info.value.layer.startswith("spectrum")
    assert "RFFT" in str(info.value)  # the message points at the way around
    assert not (tmp_path / "fft.pte").exists()

    model = _SpectralNet(RFFT(64, "magnitude")).eval()
    export_executorch(model, (x,), tmp_path / "dft.pte")
    with torch.no_grad():
        expected = model.head(torch.fft.rfft(x).abs().flatten(1)).numpy()
    np.testing.assert_allclose(ExecuTorchPredictor(tmp_path / "dft.pte")(x.numpy()), expected, atol=1e-4)
