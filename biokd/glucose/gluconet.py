"""GlucoNet (Farahmand et al., arXiv 2411.10703) and the two classic baselines, persistence and linear
extrapolation.

GlucoNet splits the CGM history into a low- and a high-frequency band by variational mode decomposition
(VMD); an LSTM (after two small convolutions) forecasts from the low band with insulin and carbohydrates,
a small Transformer (the part distilled from the teacher) from the high band with the CGM mask, IOB and
COB; the two forecasts add up. Defaults give 10,872 parameters (the released checkpoints: 10,940).

Input key ``glucose_inputs``: float32 ``(B, 6, T)`` in raw units, the channels of
:data:`biokd.glucose.ohiot1dm.CHANNELS`; output ``(B, n_outputs)`` forecasts in mg/dL.

Decomposition: computed on each input window alone (causal: nothing outside the window is read), inside
``forward``, by :class:`VMD`: a fixed number of VMD iterations written as tensor operations, with the
DFT and its inverse as constant matrix products (no FFT, no data-dependent control flow), so the
exported graph holds the decomposition and the model takes the same raw window on a device. No VMD
package is installed here (``vmdpy`` and ``sktime`` are absent), so VMD is implemented here, after
Dragomiretskiy & Zosso, IEEE TSP 2014 (tau = 0: no Lagrangian update; modes initialised uniformly).
Two modes (``vmd_mode``): ``folded`` (default) fixes the centre frequencies, which makes the 30 sweeps one
linear map of the window, applied as one T x T matrix (:class:`FoldedVMD`: small and fast enough for the
wearable budget); ``sweeps`` runs the adaptive sweeps in the graph (:class:`VMD`, the model before the fold).

Feature for distillation: submodule ``high_feature`` outputs ``(B, d_model)`` (32 by default).

Differences from the official code (``shovito66/GlucoNet``, see ``models/gluconet.md``): VMD runs per
window (the official code decomposes the whole series, leaking the future); one band split for training
and inference; the student is actually optimised; metrics at the horizon asked for, not t+5 min.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..models import constructor_kwargs
from .ohiot1dm import CHANNEL_SCALE, CHANNEL_SHIFT, CHANNELS, input_sizes

DELTA_SCALE = 50.0
#: Centre frequencies (cycles per sample) where the VMD modes start, or stay when they are fixed.
OMEGA_INIT = (0.0, 0.03, 0.08, 0.16)
VMD_MODES = ("folded", "sweeps")


def _vmd_matrices(n_times: int) -> tuple[np.ndarray, ...]:
    """Mirror-extension + one-sided DFT (T → F) and inverse DFT back to the window (F → T) as matrices."""
    half = n_times // 2
    n = 2 * n_times
    # The window mirrored at both ends (length 2T), as in the VMD paper, written as a (T, N) selection.
    index = np.concatenate([np.arange(half - 1, -1, -1), np.arange(n_times), np.arange(n_times - 1, half - 1, -1)])
    mirror = np.zeros((n_times, n))
    mirror[index, np.arange(n)] = 1.0
    k = np.arange(n // 2 + 1)
    angle = 2 * np.pi * np.outer(np.arange(n), k) / n  # (N, F)
    fwd_re, fwd_im = mirror @ np.cos(angle), -(mirror @ np.sin(angle))
    weight = np.where((k == 0) | (k == n // 2), 1.0, 2.0)[:, None] / n
    keep = np.arange(half, half + n_times)  # the original window inside the mirrored signal
    inv_re = weight * np.cos(angle.T[:, keep])
    inv_im = -weight * np.sin(angle.T[:, keep])
    # Contiguous copies: transposed views become non-contiguous buffers that ExecuTorch cannot lift.
    return (*(np.ascontiguousarray(m) for m in (fwd_re, fwd_im, inv_re, inv_im)), k / n)


class VMD(nn.Module):
    """Variational mode decomposition of each window into a low band and the rest, as fixed tensor ops.

    ``forward(x)`` with ``x`` ``(B, T)`` returns ``(low, high)``, each ``(B, T)``, ``low + high == x``:
    ``low`` is the sum of the ``n_low`` modes initialised at the lowest centre frequencies (mode 0 held
    at 0 when ``dc``), after ``n_iter`` Gauss-Seidel sweeps of the VMD updates
    ``û_k(ω) = (x̂(ω) − Σ_{i≠k} û_i(ω)) / (1 + α(ω − ω_k)²)`` and
    ``ω_k = Σ ω|û_k(ω)|² / Σ |û_k(ω)|²`` over the one-sided spectrum of the mirrored window.

    The sweeps are a fixed number, not run to a tolerance: the result is a fixed, deterministic function
    of the window that exports as a static graph, at the price of stopping short of convergence (on
    simulated CGM windows, 30 sweeps leave the low band within about 15% of the high band's SD of its
    converged value). ``omega_init`` starts the centre frequencies (cycles per sample) where CGM windows
    hold their energy, which converges much faster than the uniform start of the paper.
    ``update_omega=False`` keeps the centre frequencies at ``omega_init``: each sweep is then linear in the
    window, and so is the whole decomposition (:class:`FoldedVMD` is that map as one matrix).
    """

    def __init__(
        self,
        n_times: int = 36,
        n_modes: int = 4,
        n_low: int = 2,
        alpha: float = 2000.0,
        n_iter: int = 30,
        dc: bool = True,
        omega_init: Sequence[float] = OMEGA_INIT,
        update_omega: bool = True,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if not 1 <= n_low < n_modes:
            raise ValueError(f"n_low must be in [1, n_modes); got n_low={n_low}, n_modes={n_modes}")
        if len(omega_init) != n_modes:
            raise ValueError(f"omega_init needs {n_modes} centre frequencies; got {list(omega_init)}")
        self.n_modes, self.n_low, self.alpha, self.n_iter, self.dc = n_modes, n_low, alpha, n_iter, dc
        self.update_omega = update_omega
        fwd_re, fwd_im, inv_re, inv_im, freqs = _vmd_matrices(n_times)
        for name, value in (("fwd_re", fwd_re), ("fwd_im", fwd_im), ("inv_re", inv_re), ("inv_im", inv_im)):
            self.register_buffer(name, torch.tensor(value, dtype=dtype), persistent=False)
        self.register_buffer("freqs", torch.tensor(freqs, dtype=dtype), persistent=False)
        self.register_buffer("omega_init", torch.tensor(omega_init, dtype=dtype), persistent=False)

    def modes_spectrum(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One-sided spectra of the modes, each ``(B, 2, F)`` (real, imaginary), and their centre
        frequencies ``(B, K)`` in cycles per sample."""
        spectrum = torch.stack([x @ self.fwd_re, x @ self.fwd_im], dim=1)  # (B, 2, F)
        modes = [torch.zeros_like(spectrum) for _ in range(self.n_modes)]
        omega = [self.omega_init[k].expand(x.shape[0], 1, 1) for k in range(self.n_modes)]
        total = torch.zeros_like(spectrum)
        for _ in range(self.n_iter):
            for k in range(self.n_modes):
                new = (spectrum - total + modes[k]) / (1.0 + self.alpha * (self.freqs - omega[k]) ** 2)
                total = total + (new - modes[k])
                modes[k] = new
                if self.update_omega and not (self.dc and k == 0):
                    power = (new * new).sum(1, keepdim=True)
                    omega[k] = (power * self.freqs).sum(-1, keepdim=True) / (power.sum(-1, keepdim=True) + 1e-12)
        return modes, torch.cat(omega, dim=1).flatten(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        modes, _ = self.modes_spectrum(x)
        low = modes[0]
        for k in range(1, self.n_low):
            low = low + modes[k]
        low = low[:, 0] @ self.inv_re + low[:, 1] @ self.inv_im
        return low, x - low


def fold_vmd(
    n_times: int = 36,
    n_modes: int = 4,
    n_low: int = 2,
    alpha: float = 2000.0,
    n_iter: int = 30,
    dc: bool = True,
    omega: Sequence[float] = OMEGA_INIT,
) -> np.ndarray:
    """The low-band matrix ``L`` ``(T, T)`` of VMD with centre frequencies fixed at ``omega``: ``low = x @ L``.

    With fixed centre frequencies every mode update is linear in the window, so ``n_iter`` sweeps are one
    linear map; it is read off exactly by running the sweeps (in float64) on the identity basis: row ``i`` of
    ``L`` is the low band of the unit window ``e_i``.
    """
    vmd = VMD(n_times, n_modes, n_low, alpha, n_iter, dc, omega, update_omega=False, dtype=torch.float64)
    with torch.no_grad():
        low, _ = vmd(torch.eye(n_times, dtype=torch.float64))
    return low.numpy()


def median_centre_frequencies(glucose_inputs: torch.Tensor, batch_size: int = 1024, **vmd_kwargs) -> list[float]:
    """Median over windows of the centre frequencies the adaptive VMD settles at (cycles per sample).

    ``glucose_inputs``: ``(N, 6, T)`` raw windows (the CGM channel is normalised as GlucoNet does). A data-driven
    choice of ``GlucoNet(vmd_omega=...)`` for the folded decomposition, from training windows only.
    """
    n_times = glucose_inputs.shape[-1]
    vmd = VMD(n_times, **vmd_kwargs)
    z = (glucose_inputs[:, 0] - CHANNEL_SHIFT[0]) / CHANNEL_SCALE[0]
    with torch.no_grad():
        omega = torch.cat([vmd.modes_spectrum(z[i : i + batch_size])[1] for i in range(0, len(z), batch_size)])
    return [float(w) for w in omega.median(0).values]


class FoldedVMD(nn.Module):
    """VMD with fixed centre frequencies folded into one matrix per band: ``low = x @ L``, ``high = x − low``.

    Same arguments as :class:`VMD` (``omega``: the fixed centre frequencies). Equal, to float rounding, to
    ``VMD(..., omega_init=omega, update_omega=False)``; causal like it (each window alone, nothing after its
    last slot), but one ``(T, T)`` matrix product in the exported graph instead of ``n_iter × n_modes``
    unrolled updates. What is lost: the centre frequencies no longer follow each window's spectrum.
    """

    def __init__(
        self,
        n_times: int = 36,
        n_modes: int = 4,
        n_low: int = 2,
        alpha: float = 2000.0,
        n_iter: int = 30,
        dc: bool = True,
        omega: Sequence[float] = OMEGA_INIT,
    ):
        super().__init__()
        low = fold_vmd(n_times, n_modes, n_low, alpha, n_iter, dc, omega)
        # Stored in checkpoints (5 KB at T = 36) so that a checkpoint of the 30-sweep model, which has no such
        # entry, cannot load into the folded model silently (see _load_from_state_dict).
        self.register_buffer("low_matrix", torch.tensor(low, dtype=torch.float32))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, *args) -> None:  # type: ignore[override]
        if prefix + "low_matrix" not in state_dict:
            raise ValueError(
                f"the checkpoint has no '{prefix}low_matrix': it was trained with the adaptive 30-sweep VMD "
                "(GlucoNet before the folded decomposition); load it with vmd_mode='sweeps'"
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, *args)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = x @ self.low_matrix
        return low, x - low


def _sinusoidal_positions(n_times: int, d_model: int) -> torch.Tensor:
    position = torch.arange(n_times, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(n_times, d_model)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)
    return table[None]


class GlucoNet(nn.Module):
    """VMD bands → CNN-LSTM (low band) + Transformer (high band); see the module docstring."""

    input_keys = ("glucose_inputs",)

    spec_sizes = staticmethod(input_sizes)

    def __init__(
        self,
        n_chans: int = len(CHANNELS),
        n_times: int = 36,
        n_outputs: int = 2,
        conv_channels: int = 16,
        lstm_hidden: int = 8,
        d_model: int = 32,
        n_heads: int = 2,
        dim_feedforward: int = 64,
        head_hidden: int = 8,
        drop_prob: float = 0.1,
        vmd_modes: int = 4,
        vmd_low: int = 2,
        vmd_alpha: float = 2000.0,
        vmd_iter: int = 30,
        vmd_mode: str = "folded",
        vmd_omega: Sequence[float] | None = None,
        channel_shift: Sequence[float] = CHANNEL_SHIFT,
        channel_scale: Sequence[float] = CHANNEL_SCALE,
    ):
        super().__init__()
        if n_chans != len(CHANNELS):
            raise ValueError(f"GlucoNet reads the {len(CHANNELS)} channels {CHANNELS}; got n_chans={n_chans}")
        self.config = constructor_kwargs(locals())
        self.register_buffer("shift", torch.tensor(channel_shift, dtype=torch.float32).view(1, -1, 1))
        self.register_buffer("scale", torch.tensor(channel_scale, dtype=torch.float32).view(1, -1, 1))
        if vmd_mode not in VMD_MODES:
            raise ValueError(f"vmd_mode must be one of {VMD_MODES}; got {vmd_mode!r}")
        omega = tuple(vmd_omega) if vmd_omega is not None else OMEGA_INIT[:vmd_modes]
        self.decompose: nn.Module
        if vmd_mode == "folded":
            self.decompose = FoldedVMD(n_times, vmd_modes, vmd_low, vmd_alpha, vmd_iter, omega=omega)
        else:
            self.decompose = VMD(n_times, vmd_modes, vmd_low, vmd_alpha, vmd_iter, omega_init=omega)
        # Low band + insulin + carbs → two convolutions → LSTM → small MLP.
        self.low_conv = nn.Sequential(
            nn.Conv1d(3, conv_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv1d(conv_channels, conv_channels, 3, padding=1),
            nn.ReLU(),
        )
        self.low_lstm = nn.LSTM(conv_channels, lstm_hidden, batch_first=True)
        self.low_head = nn.Sequential(nn.Linear(lstm_hidden, 4), nn.ReLU(), nn.Linear(4, n_outputs))
        # High band + CGM mask + IOB + COB → one Transformer encoder layer.
        self.high_embed = nn.Linear(4, d_model)
        self.register_buffer("position", _sinusoidal_positions(n_times, d_model), persistent=False)
        self.high_encoder = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward, drop_prob, batch_first=True, norm_first=True
        )
        self.high_feature = nn.LayerNorm(d_model)
        self.high_head = nn.Sequential(nn.Linear(d_model, head_hidden), nn.GELU(), nn.Linear(head_hidden, n_outputs))

    def bands(self, glucose_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Low and high band of the normalised CGM channel, ``(B, T)`` each."""
        z = (glucose_inputs[:, 0] - self.shift[:, 0]) / self.scale[:, 0]
        return self.decompose(z)

    def forward(self, glucose_inputs: torch.Tensor) -> torch.Tensor:
        z = (glucose_inputs - self.shift) / self.scale
        low, high = self.decompose(z[:, 0])
        low_in = torch.stack([low, z[:, 2], z[:, 3]], dim=1)  # (B, 3, T)
        seq, _ = self.low_lstm(self.low_conv(low_in).transpose(1, 2))
        low_out = self.low_head(seq[:, -1])
        high_in = torch.stack([high, z[:, 1], z[:, 4], z[:, 5]], dim=-1)  # (B, T, 4)
        h = self.high_encoder(self.high_embed(high_in) + self.position)
        high_out = self.high_head(self.high_feature(h[:, -1]))
        return glucose_inputs[:, 0, -1:] + DELTA_SCALE * (low_out + high_out)


class Persistence(nn.Module):
    """Baseline: every horizon repeats the last real CGM reading of the window (``cgm_mask`` = 1).

    Filled slots are skipped: after a long gap the ``cgm`` channel holds a running mean of earlier readings,
    which is not what the baseline repeats. A window without any real reading falls back to its last value.
    """

    input_keys = ("glucose_inputs",)

    def __init__(self, n_outputs: int = 2):
        super().__init__()
        self.config = {"n_outputs": n_outputs}

    def forward(self, glucose_inputs: torch.Tensor) -> torch.Tensor:
        cgm, mask = glucose_inputs[:, 0], glucose_inputs[:, 1]
        n_times = cgm.shape[1]
        position = torch.arange(1, n_times + 1, dtype=cgm.dtype, device=cgm.device)
        last_real = ((mask > 0.5).to(cgm.dtype) * position).amax(dim=1)  # 1-based; 0: no real reading
        index = torch.where(last_real > 0, last_real - 1, torch.full_like(last_real, n_times - 1)).long()
        return cgm.gather(1, index[:, None]).expand(-1, self.config["n_outputs"])


class LinearExtrapolation(nn.Module):
    """Baseline: a least-squares line through the last ``fit_steps`` real readings, extended ``horizons``.

    Readings are weighted by the CGM mask (filled values do not count); with fewer than two real readings
    the slope is 0 (persistence). A fixed closed form, so it exports as well.
    """

    input_keys = ("glucose_inputs",)

    def __init__(self, horizons: Sequence[int] = (6, 12), fit_steps: int = 6):
        super().__init__()
        self.config = {"horizons": [int(h) for h in horizons], "fit_steps": fit_steps}
        self.register_buffer("horizons", torch.tensor(horizons, dtype=torch.float32).view(1, -1), persistent=False)
        self.register_buffer("t", torch.arange(-fit_steps + 1, 1, dtype=torch.float32).view(1, -1), persistent=False)

    def forward(self, glucose_inputs: torch.Tensor) -> torch.Tensor:
        k = self.t.shape[1]
        y = glucose_inputs[:, 0, -k:]
        w = glucose_inputs[:, 1, -k:]
        sw = w.sum(1, keepdim=True).clamp_min(1e-6)
        t_mean = (w * self.t).sum(1, keepdim=True) / sw
        y_mean = (w * y).sum(1, keepdim=True) / sw
        var = (w * (self.t - t_mean) ** 2).sum(1, keepdim=True)
        cov = (w * (self.t - t_mean) * (y - y_mean)).sum(1, keepdim=True)
        slope = torch.where(var > 1e-6, cov / var.clamp_min(1e-6), torch.zeros_like(var))
        level = torch.where(var > 1e-6, y_mean - slope * t_mean, y[:, -1:])
        return level + slope * self.horizons
