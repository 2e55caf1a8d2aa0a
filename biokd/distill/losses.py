"""Distillation losses as pure tensor functions (the Distiller wires them to taps by name).

Feature tensors are ``(B, ..., T, D)`` or any shape whose axes are named in each function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Canonical EEG bands in Hz, used to weight spectral bins.
EEG_BANDS: dict[str, tuple[float, float]] = {
    "delta": (0.5, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 100.0),
}


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton KD: ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, averaged over the batch."""
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t


def output_match(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Regression KD: MSE between student outputs and teacher outputs divided by ``temperature``.

    ``temperature=1`` matches the teacher as is; larger values soften its targets as GlucoNet does.
    """
    return F.mse_loss(student, teacher / temperature)


def feature_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student, teacher)


def feature_cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``1 − cos`` along the last (feature) axis, averaged over all other axes."""
    return (1.0 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-6)).mean()


def band_weights(n_times: int, sfreq: float, bands: dict[str, float], device=None) -> torch.Tensor:
    """Weight of each rFFT bin: the weight of the EEG band holding its frequency (0 outside all bands)."""
    freqs = torch.fft.rfftfreq(n_times, d=1.0 / sfreq, device=device)
    w = torch.zeros_like(freqs)
    for name, weight in bands.items():
        if name not in EEG_BANDS:
            raise KeyError(f"unknown EEG band {name!r}; known bands: {', '.join(EEG_BANDS)}")
        lo, hi = EEG_BANDS[name]
        w[(freqs >= lo) & (freqs < hi)] = weight
    return w


def spectral_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    dim: int = -2,
    magnitude: float = 1.0,
    phase: float = 1.0,
    weights: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Align the spectra of two feature sequences along axis ``dim`` (time).

    Magnitude: MSE of log-magnitudes. Phase: ``1 − cos(Δφ)`` weighted by the teacher's normalised
    magnitude, so near-empty bins (whose phase is noise) count little. Zero for identical inputs;
    positive for a phase-shifted copy. ``weights`` (one per rFFT bin) emphasises bands.
    """
    s = torch.fft.rfft(student.float(), dim=dim, norm="ortho")
    t = torch.fft.rfft(teacher.float(), dim=dim, norm="ortho")
    mag_s, mag_t = s.abs(), t.abs()
    shape = [1] * s.dim()
    shape[dim] = s.shape[dim]
    w = torch.ones(shape, device=s.device) if weights is None else weights.reshape(shape).to(s.device)
    total = w.expand_as(mag_s).sum().clamp_min(eps)
    loss = s.new_zeros((), dtype=torch.float32)
    if magnitude:
        diff = (torch.log1p(mag_s) - torch.log1p(mag_t)) ** 2
        loss = loss + magnitude * (w * diff).sum() / total
    if phase:
        cos_dphi = (s * t.conj()).real / (mag_s * mag_t).clamp_min(eps)
        importance = mag_t / mag_t.mean(dim=dim, keepdim=True).clamp_min(eps)
        loss = loss + phase * (w * importance * (1.0 - cos_dphi)).sum() / total
    return loss


def channel_correlation(x: torch.Tensor) -> torch.Tensor:
    """Per-sample channel × channel Pearson correlation of ``x`` shaped ``(B, C, ...)``."""
    flat = x.flatten(2).float()
    flat = flat - flat.mean(dim=-1, keepdim=True)
    flat = flat / flat.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return flat @ flat.transpose(1, 2)


def connectivity_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE between the channel-correlation matrices of student and teacher representations ``(B, C, ...)``.

    Needs no projection: the matrices are C × C whatever the feature widths.
    """
    return F.mse_loss(channel_correlation(student), channel_correlation(teacher))
