"""Exportable spectra: the real DFT as a fixed cos/sin matrix product, the STFT as a fixed convolution.

Why: the legacy ONNX exporter never took ``aten::fft_rfft``; the dynamo exporter emits ONNX ``DFT`` (float
only in onnxruntime, complex as a trailing dimension); ExecuTorch rejects complex tensors in most kernels
(``rfft(x).abs()`` fails its IR check) and XNNPACK has no FFT; TFLite Micro has no FFT op at all. A DFT of a
fixed length ``n`` is a matrix product with a constant ``(n, n//2 + 1)`` cos/sin basis, which every runtime
runs (and XNNPACK delegates as a linear layer). It costs ``O(n·F)`` instead of ``O(n log n)``: fine for the
window lengths of wearable models (a 200-sample patch: 200 × 101 multiply-adds per channel).

:class:`RFFT` equals ``torch.fft.rfft(x, n=n, norm=norm)`` (as real/imaginary parts, magnitude, power or
phase) and :class:`STFT` equals ``torch.stft(..., return_complex=True)`` to float32 rounding; both keep their
bases as non-persistent buffers, so adding them to a student does not change its ``state_dict``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Output = Literal["real_imag", "magnitude", "power", "phase", "magnitude_phase"]
Norm = Literal["backward", "ortho", "forward"] | None
_OUTPUTS = ("real_imag", "magnitude", "power", "phase", "magnitude_phase")


def _scale(n: int, norm: Norm) -> float:
    if norm in (None, "backward"):
        return 1.0
    if norm == "ortho":
        return 1.0 / math.sqrt(n)
    if norm == "forward":
        return 1.0 / n
    raise ValueError(f"norm must be None, 'backward', 'ortho' or 'forward'; got {norm!r}")


def rfft_basis(n: int, norm: Norm = None, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)``, each ``(n, n//2 + 1)``, with ``rfft(x) = x @ cos - 1j · (x @ sin)``.

    Angles are reduced modulo ``n`` in integers before the float64 trigonometry, so large ``k·t`` products
    lose no precision.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    t = torch.arange(n, dtype=torch.int64)
    k = torch.arange(n // 2 + 1, dtype=torch.int64)
    angle = (torch.outer(t, k) % n).to(torch.float64) * (2.0 * math.pi / n)
    scale = _scale(n, norm)
    return (torch.cos(angle) * scale).to(dtype), (torch.sin(angle) * scale).to(dtype)


def _combine(real: torch.Tensor, imag: torch.Tensor, output: Output) -> torch.Tensor:
    if output == "real_imag":
        return torch.stack([real, imag], dim=-1)
    power = real * real + imag * imag
    if output == "power":
        return power
    if output == "magnitude":
        return torch.sqrt(power)
    phase = torch.atan2(imag, real)
    if output == "phase":
        return phase
    return torch.stack([torch.sqrt(power), phase], dim=-1)


def _check_output(output: str) -> None:
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(_OUTPUTS)}; got {output!r}")


class RFFT(nn.Module):
    """Real DFT over the last dimension, like ``torch.fft.rfft(x, n=n, norm=norm)``, with real outputs.

    ``output``: ``"real_imag"`` → ``(..., n//2+1, 2)`` (as ``torch.view_as_real``); ``"magnitude"``,
    ``"power"``, ``"phase"`` → ``(..., n//2+1)``; ``"magnitude_phase"`` → ``(..., n//2+1, 2)``. Inputs
    longer than ``n`` are cut to their first ``n`` samples and shorter ones zero-padded, as ``torch.fft``
    does. Phase is ``atan2(imag, real)`` and meaningless where the magnitude is ~0.
    """

    def __init__(self, n: int, output: Output = "real_imag", norm: Norm = None):
        super().__init__()
        _check_output(output)
        self.n, self.output, self.norm = int(n), output, norm
        cos, sin = rfft_basis(self.n, norm)
        # imag = -(x @ sin): the sign is folded into the stored basis.
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("neg_sin", -sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        cos, neg_sin = self.cos, self.neg_sin
        if length > self.n:
            x = x[..., : self.n]
        elif length < self.n:  # zero padding = dropping the basis rows the zeros would meet
            cos, neg_sin = cos[:length], neg_sin[:length]
        return _combine(torch.matmul(x, cos), torch.matmul(x, neg_sin), self.output)

    def extra_repr(self) -> str:
        return f"n={self.n}, output={self.output!r}, norm={self.norm!r}"


def _window(window: str | torch.Tensor | None, n_fft: int) -> torch.Tensor:
    if window is None or window == "rect":
        return torch.ones(n_fft, dtype=torch.float64)
    if isinstance(window, torch.Tensor):
        if window.shape != (n_fft,):
            raise ValueError(f"window must have shape ({n_fft},); got {tuple(window.shape)}")
        return window.to(torch.float64)
    if window == "hann":
        return torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    if window == "hamming":
        return torch.hamming_window(n_fft, periodic=True, dtype=torch.float64)
    raise ValueError(f"window must be 'hann', 'hamming', 'rect', None or a tensor; got {window!r}")


class STFT(nn.Module):
    """Short-time Fourier transform of ``(..., T)`` as a strided convolution with windowed cos/sin kernels.

    Equals ``torch.stft(x, n_fft, hop_length, window=w, center=center, pad_mode="reflect", normalized=False,
    onesided=True, return_complex=True)`` with the complex result given as ``output`` (see :class:`RFFT`):
    ``"real_imag"`` → ``(..., n_fft//2+1, frames, 2)``, ``"magnitude"``/``"power"``/``"phase"`` →
    ``(..., n_fft//2+1, frames)``. ``window`` is ``"hann"`` (periodic), ``"hamming"``, ``"rect"``/None or a
    tensor of length ``n_fft``.
    """

    def __init__(
        self,
        n_fft: int,
        hop_length: int | None = None,
        window: str | torch.Tensor | None = "hann",
        center: bool = False,
        output: Output = "real_imag",
    ):
        super().__init__()
        _check_output(output)
        self.n_fft, self.hop_length = int(n_fft), int(hop_length or n_fft // 4)
        self.center, self.output = center, output
        cos, sin = rfft_basis(self.n_fft, dtype=torch.float64)
        w = _window(window, self.n_fft)[:, None]
        n_freq = self.n_fft // 2 + 1
        # conv1d kernels (2F, 1, n_fft): rows 0..F-1 give the real parts, F..2F-1 the imaginary parts.
        kernel = torch.cat([(w * cos).T, (-w * sin).T], dim=0).to(torch.float32)
        self.register_buffer("kernel", kernel[:, None, :], persistent=False)
        self.n_freq = n_freq

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, 1, x.shape[-1])
        if self.center:
            pad = self.n_fft // 2
            flat = F.pad(flat, (pad, pad), mode="reflect")
        spec = F.conv1d(flat, self.kernel, stride=self.hop_length)  # (N, 2F, frames)
        real, imag = spec[:, : self.n_freq], spec[:, self.n_freq :]
        out = _combine(real, imag, self.output)
        return out.reshape(*lead, *out.shape[1:])

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, hop_length={self.hop_length}, center={self.center}, output={self.output!r}"
