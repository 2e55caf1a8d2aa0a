"""Distillation losses: values by hand, reference implementations, invariances and gradient checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import signal

from biokd.distill import losses
from biokd.distill.router import CAPTION, LayerRouter, normalize_layers
from biokd.errors import ConfigError


def _sines(freqs_amps_phases, sfreq: float, n_times: int) -> torch.Tensor:
    time = torch.arange(n_times, dtype=torch.float64) / sfreq
    return sum(a * torch.cos(2 * math.pi * f * time + p) for f, a, p in freqs_amps_phases)


# -- spectral ------------------------------------------------------------------------------------------


def test_spectral_zero_for_identical_and_phase_only_for_a_circular_shift():
    x = torch.stack([_sines([(f, 1.0, 0.0)], 64.0, 64) for f in (3, 5, 9)])[None]  # (1, 3, 64)
    assert losses.spectral_loss(x, x, sfreq=64.0).item() == pytest.approx(0.0, abs=1e-10)
    shifted = torch.roll(x, 4, dims=-1)
    assert losses.spectral_loss(x, shifted, sfreq=64.0, phase=0.0).item() == pytest.approx(0.0, abs=1e-10)
    # a 4-sample shift turns f Hz by f·π/8: 1 − cos is 0.617, 1.383, 1.924 for 3, 5, 9 Hz, all of equal magnitude
    expected = np.mean([1 - math.cos(f * math.pi / 8) for f in (3, 5, 9)])
    phase_only = losses.spectral_loss(x, shifted, sfreq=64.0, magnitude=0.0, phase_floor=0.0).item()
    assert phase_only == pytest.approx(expected, rel=1e-6)


def test_energy_only_in_alpha_is_penalised_only_through_alpha():
    sfreq, n = 200.0, 400  # bins every 0.5 Hz
    teacher = torch.stack([_sines([(10.0, 1.0, 0.2), (11.5, 0.4, 1.0)], sfreq, n) for _ in range(3)])[None]
    student = torch.stack([_sines([(10.0, 0.6, -0.7), (12.0, 0.3, 0.0)], sfreq, n) for _ in range(3)])[None]
    flat = {"delta": 1.0, "theta": 1.0, "alpha": 1.0, "beta": 1.0, "gamma": 1.0}
    base = losses.spectral_loss(student, teacher, sfreq=sfreq, bands=flat).item()
    assert base > 0.05
    others = {"delta": 7.0, "theta": 0.0, "alpha": 1.0, "beta": 30.0, "gamma": 0.1}
    assert losses.spectral_loss(student, teacher, sfreq=sfreq, bands=others).item() == pytest.approx(base, rel=1e-9)
    doubled = {**flat, "alpha": 2.0}
    twice = losses.spectral_loss(student, teacher, sfreq=sfreq, bands=doubled).item()
    assert twice == pytest.approx(2 * base, rel=1e-9)
    muted = {**flat, "alpha": 0.0}
    assert losses.spectral_loss(student, teacher, sfreq=sfreq, bands=muted).item() == pytest.approx(0.0, abs=1e-12)
    # the same pair moved to beta (20 Hz) is seen by beta's weight and not by alpha's
    beta_t = torch.stack([_sines([(20.0, 1.0, 0.2)], sfreq, n)])[None]
    beta_s = torch.stack([_sines([(20.0, 0.5, 1.2)], sfreq, n)])[None]
    b1 = losses.spectral_loss(beta_s, beta_t, sfreq=sfreq, bands={"alpha": 5.0, "beta": 1.0}).item()
    b3 = losses.spectral_loss(beta_s, beta_t, sfreq=sfreq, bands={"alpha": 1.0, "beta": 3.0}).item()
    assert b1 > 0.05 and b3 == pytest.approx(3 * b1, rel=1e-9)


def test_bands_are_checked_against_the_axis_in_hertz():
    assert losses.check_bands(400, 200.0, {"alpha": 1.0, "gamma": 1.0}) == {"alpha": 10, "gamma": 140}
    # 10 samples at 100 Hz: bins every 10 Hz; delta (0.5-4 Hz) falls between 0 and 10 Hz
    with pytest.raises(ConfigError, match=r"'delta' \(0.5-4 Hz\).*10 samples at sfreq 100 Hz.*every 10 Hz.*between"):
        losses.check_bands(10, 100.0, {"alpha": 1.0, "delta": 1.0})
    # 50 Hz sampling: Nyquist 25 Hz, gamma starts at 30 Hz
    with pytest.raises(ConfigError, match=r"'gamma' \(30-100 Hz\).*Nyquist 25 Hz.*above the highest bin"):
        losses.band_weights(100, 50.0, {"gamma": 1.0})
    # the former term ran along 4 patch tokens (one per second): its bins 0, 0.25, 0.5 Hz reach no band above delta
    with pytest.raises(ConfigError, match=r"'alpha' \(8-13 Hz\).*4 samples at sfreq 1 Hz"):
        losses.check_bands(4, 1.0, {"alpha": 1.0})
    with pytest.raises(ConfigError, match=r"known bands: delta 0\.5-4 Hz, theta"):
        losses.check_bands(100, 50.0, {"mu": 1.0})
    with pytest.raises(ConfigError, match="weight must be a number >= 0"):
        losses.check_bands(100, 50.0, {"alpha": -1.0})
    with pytest.raises(ConfigError, match="sfreq must be a positive"):
        losses.check_bands(100, 0.0, None)
    # the loss refuses the same bands (never a silent zero)
    x = torch.randn(2, 3, 10)
    with pytest.raises(ConfigError, match="'theta'"):
        losses.spectral_loss(x, x, sfreq=100.0, bands={"theta": 1.0})
    w = losses.band_weights(200, 200.0, {"alpha": 2.0, "beta": 0.5})
    freqs = torch.fft.rfftfreq(200, 1 / 200)
    assert w[freqs == 10].item() == 2.0 and w[freqs == 20].item() == 0.5 and w[freqs == 50].item() == 0.0


def _old_phase_term(s_time: torch.Tensor, t_time: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The former phase part: 1 − cos Δφ on exact unit phasors, weighted by the teacher's normalised magnitude."""
    s, t = torch.fft.rfft(s_time, norm="ortho"), torch.fft.rfft(t_time, norm="ortho")
    cos = (s * t.conj()).real / (s.abs() * t.abs()).clamp_min(eps)
    importance = t.abs() / t.abs().mean(-1, keepdim=True)
    return (importance * (1 - cos)).sum() / s.numel()


def test_phase_gradient_stays_bounded_when_a_student_bin_vanishes():
    sfreq, n = 100.0, 200
    torch.manual_seed(0)
    teacher = (_sines([(10.0, 2.0, 0.3)], sfreq, n) + 0.3 * torch.randn(n, dtype=torch.float64))[None]
    spec = torch.fft.rfft(teacher, norm="ortho")
    k = 20  # the 10 Hz bin
    spec[..., k] = 1e-4 * torch.exp(torch.tensor(2.5j, dtype=torch.complex128))
    student = torch.fft.irfft(spec, n=n, norm="ortho").requires_grad_(True)
    assert torch.fft.rfft(student.detach(), norm="ortho")[..., k].abs().item() == pytest.approx(1e-4, rel=1e-6)

    loss = losses.spectral_loss(student, teacher, sfreq=sfreq, magnitude=0.0, phase=1.0)
    (grad,) = torch.autograd.grad(loss, student)
    delta = 0.1 * torch.fft.rfft(teacher, norm="ortho").abs().mean().item()
    bound = 2.0 / delta  # the docstring's bound: 2·phase·max w / (δ_min · n_seq), here phase = w = n_seq = 1
    assert torch.isfinite(grad).all() and 0 < grad.norm().item() <= bound

    old_student = student.detach().clone().requires_grad_(True)
    (old_grad,) = torch.autograd.grad(_old_phase_term(old_student, teacher), old_student)
    assert old_grad.norm().item() > 100 * grad.norm().item()  # the old term was dominated by the vanishing bin


def test_spectral_gradcheck_and_shape_errors():
    torch.manual_seed(1)
    s = torch.randn(1, 2, 16, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 2, 16, dtype=torch.float64)
    banded = {"alpha": 1.0}
    in_alpha = lambda a: losses.spectral_loss(a, t, sfreq=16.0, bands=banded)  # noqa: E731
    assert torch.autograd.gradcheck(in_alpha, (s,), fast_mode=True)
    along_1 = lambda a: losses.spectral_loss(a.transpose(1, 2), t.transpose(1, 2), sfreq=16.0, dim=1)  # noqa: E731
    assert torch.autograd.gradcheck(along_1, (s,), fast_mode=True)
    with pytest.raises(ConfigError, match=r"student shape \(1, 2, 16\) differs from teacher shape \(1, 2, 8\)"):
        losses.spectral_loss(s, t[..., :8], sfreq=16.0)


# -- connectivity --------------------------------------------------------------------------------------


def test_correlation_equals_numpy_and_a_shared_profile_changes_nothing():
    rng = np.random.default_rng(0)
    b, c, n = 4, 8, 256
    sources = rng.normal(size=(b, c, n))
    mixing = np.eye(c) + 0.4 * rng.normal(size=(c, c))
    teacher = torch.from_numpy(np.einsum("ij,bjn->bin", mixing, sources))
    student = teacher + torch.from_numpy(rng.normal(size=(b, c, n)))
    plain = losses.channel_connectivity(teacher, reference="none")
    assert np.allclose(plain[1].numpy(), np.corrcoef(teacher[1].numpy()), atol=1e-10)
    referenced = losses.channel_connectivity(teacher)
    car = teacher[2] - teacher[2].mean(0, keepdim=True)
    assert np.allclose(referenced[2].numpy(), np.corrcoef(car.numpy()), atol=1e-10)

    base = losses.connectivity_loss(student, teacher).item()
    assert base > 1e-3
    profile = torch.from_numpy(3.0 * rng.normal(size=(b, 1, n)))  # one time course added to every channel
    assert losses.connectivity_loss(student + profile, teacher).item() == pytest.approx(base, rel=1e-6)
    assert losses.connectivity_loss(student, teacher + 0.5 * profile).item() == pytest.approx(base, rel=1e-6)

    def mean_off_diagonal(m):
        return m[:, ~torch.eye(c, dtype=torch.bool)].mean().item()

    independent = torch.from_numpy(rng.normal(size=(b, c, n)))
    assert abs(mean_off_diagonal(losses.channel_connectivity(independent, reference="none"))) < 0.05
    # without the average reference the shared profile makes every pair look connected
    assert mean_off_diagonal(losses.channel_connectivity(independent + profile, reference="none")) > 0.8
    assert abs(mean_off_diagonal(losses.channel_connectivity(independent + profile))) < 0.2  # −1/(C−1) bias


def test_coherence_equals_scipy_welch_over_the_band():
    rng = np.random.default_rng(1)
    sfreq, n, c = 128.0, 1024, 4
    alpha = sum(np.sin(2 * np.pi * f * np.arange(n) / sfreq + rng.uniform(0, 6)) for f in (8, 9, 10, 11, 12))
    x = rng.normal(size=(2, c, n)) + np.array([1.0, 0.8, 0.0, 0.0])[None, :, None] * alpha
    coh = losses.channel_connectivity(
        torch.from_numpy(x), kind="coherence", sfreq=sfreq, band="alpha", reference="none", nperseg=128
    )
    f, cxy = signal.coherence(x[1, 0], x[1, 1], fs=sfreq, nperseg=128, noverlap=64)
    keep = (f >= 8) & (f < 13)
    assert coh[1, 0, 1].item() == pytest.approx(cxy[keep].mean(), abs=1e-10)
    f, cxy = signal.coherence(x[0, 1], x[0, 3], fs=sfreq, nperseg=128, noverlap=64)
    assert coh[0, 1, 3].item() == pytest.approx(cxy[keep].mean(), abs=1e-10)
    assert torch.allclose(coh.diagonal(dim1=1, dim2=2), torch.ones(2, c, dtype=torch.float64))
    assert coh[:, 0, 1].min() > 0.5 > coh[:, 2, 3].max()  # the coupled pair is coherent in alpha
    with pytest.raises(ConfigError, match=r"band 'delta' \(0.5-4 Hz\) holds no bin.*every 8 Hz"):
        losses.channel_connectivity(torch.from_numpy(x), kind="coherence", sfreq=sfreq, band="delta", nperseg=16)
    with pytest.raises(ConfigError, match=r"needs .*sfreq"):
        losses.channel_connectivity(torch.from_numpy(x), kind="coherence", band="alpha")


def test_connectivity_checks_channels_and_gradients():
    with pytest.raises(ConfigError, match="student has 6 channels and the teacher 8"):
        losses.connectivity_loss(torch.randn(2, 6, 32), torch.randn(2, 8, 32))
    with pytest.raises(ConfigError, match="student has 3 channels and the teacher 4"):
        losses.check_channels(3, 4)
    with pytest.raises(ConfigError, match="'correlation' or 'coherence'"):
        losses.channel_connectivity(torch.randn(2, 4, 32), kind="plv")
    torch.manual_seed(2)
    s = torch.randn(1, 4, 24, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 4, 24, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: losses.connectivity_loss(a, t), (s,), fast_mode=True)
    coh = dict(kind="coherence", sfreq=64.0, band=(8.0, 24.0), nperseg=8)
    assert torch.autograd.gradcheck(lambda a: losses.connectivity_loss(a, t, **coh), (s,), fast_mode=True)


# -- router --------------------------------------------------------------------------------------------


def test_router_mixture_does_not_follow_a_layer_scaled_by_100():
    torch.manual_seed(3)
    router = LayerRouter(n_layers=3, dim=8)
    layers = torch.randn(6, 3, 5, 8)
    scaled = layers.clone()
    scaled[:, 1] *= 100.0
    mix, weights = router(layers)
    mix_scaled, weights_scaled = router(scaled)
    assert torch.allclose(weights, weights_scaled, atol=1e-6)
    assert torch.allclose(mix, mix_scaled, atol=1e-5)
    assert torch.allclose(weights.sum(1), torch.ones(6), atol=1e-6)
    normed = normalize_layers(scaled)
    assert torch.allclose(normed.pow(2).mean(dim=(2, 3)), torch.ones(6, 3), atol=1e-5)
    # mixing raw outputs with the same weights would hand the scaled layer almost all of the mixture
    raw = (weights_scaled[:, :, None, None] * scaled).sum(1)
    share = (weights_scaled[:, 1, None, None] * scaled[:, 1]).norm() / raw.norm()
    assert share > 0.99
    assert "unit RMS" in CAPTION and LayerRouter.caption == CAPTION


# -- alignment terms -----------------------------------------------------------------------------------


def test_normalized_mse_and_cosine_by_hand():
    s, t = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]])
    # (0.6, 0.8) against (1, 0): squared gaps 0.16 and 0.64, mean 0.4
    assert losses.normalized_mse(s, t).item() == pytest.approx(0.4, abs=1e-7)
    assert losses.normalized_mse(5 * t, t).item() == pytest.approx(0.0, abs=1e-12)
    assert losses.cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])).item() == pytest.approx(
        1 - 1 / math.sqrt(2), abs=1e-7
    )


def _numpy_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA in feature space (Kornblith et al., 2019, eq. for the linear kernel)."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_linear_cka_matches_reference_and_is_invariant():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 12))
    y = x @ rng.normal(size=(12, 7)) + 0.5 * rng.normal(size=(20, 7))
    value = losses.linear_cka(torch.from_numpy(x).float(), torch.from_numpy(y).float()).item()
    reference = _numpy_linear_cka(x, y)
    assert value == pytest.approx(reference, abs=1e-6) and 0.1 < reference < 0.99
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    turned = torch.from_numpy(3.7 * x @ q).float()
    assert losses.linear_cka(turned, torch.from_numpy(y).float()).item() == pytest.approx(reference, abs=1e-6)
    assert losses.cka_loss(torch.from_numpy(x), torch.from_numpy(x)).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError, match="at least 2 inputs"):
        losses.linear_cka(torch.randn(1, 4), torch.randn(1, 4))


def test_info_nce_by_hand():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # unit vectors (1, 0) and (1, 1)/√2
    r = math.sqrt(2)  # cosines over the temperature 0.5: rows [2, √2] and [0, √2]

    def ce(row, i):
        return -row[i] + math.log(sum(math.exp(v) for v in row))

    s_to_t = (ce([2, r], 0) + ce([0, r], 1)) / 2
    t_to_s = (ce([2, 0], 0) + ce([r, r], 1)) / 2
    assert losses.info_nce(s, t, 0.5, symmetric=False).item() == pytest.approx(s_to_t, abs=1e-6)
    assert losses.info_nce(s, t, 0.5).item() == pytest.approx((s_to_t + t_to_s) / 2, abs=1e-6)
    with pytest.raises(ConfigError, match="shared width"):
        losses.info_nce(torch.randn(3, 4), torch.randn(3, 5))


def test_relational_distance_by_hand():
    student = torch.tensor([[0.0], [1.0], [2.0]])  # pair distances 1, 2, 1: mean 4/3 → 0.75, 1.5, 0.75
    teacher = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])  # equilateral: 1, 1, 1
    # smooth L1 (β = 1) of gaps −0.25, 0.5, −0.25: (0.03125 + 0.125 + 0.03125) / 3
    assert losses.relational_distance(student, teacher).item() == pytest.approx(0.0625, abs=1e-6)
    assert losses.relational_distance(10 * teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)


def test_similarity_structure_by_hand_with_different_widths():
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # cosines (0,1) 0, (0,2) and (1,2) 1/√2
    teacher = torch.tensor([[[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])  # cosines 1, 0, 0
    # off-diagonal squared gaps 1, ½, ½, each twice, over 6 entries
    assert losses.similarity_structure(student, teacher).item() == pytest.approx(2 / 3, abs=1e-6)
    with pytest.raises(ConfigError, match=r"student has 3 nodes .* teacher 4"):
        losses.similarity_structure(student, torch.randn(1, 4, 3))


def test_binary_kd_equals_two_class_kd():
    torch.manual_seed(5)
    s, t = torch.randn(16, 1), torch.randn(16, 1)
    two = losses.kd_kl(torch.cat([torch.zeros_like(s), s], 1), torch.cat([torch.zeros_like(t), t], 1), 2.5)
    assert losses.binary_kd(s, t, 2.5).item() == pytest.approx(two.item(), abs=1e-6)
    assert losses.binary_kd(t[:, 0], t[:, 0], 2.5).item() == pytest.approx(0.0, abs=1e-7)


def test_alignment_terms_gradcheck():
    torch.manual_seed(6)
    s = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 5, dtype=torch.float64)
    nodes_t = torch.randn(2, 2, 3, dtype=torch.float64)
    checks = {
        "normalized_mse": lambda a: losses.normalized_mse(a, t),
        "cka": lambda a: losses.cka_loss(a, t[:, :3]),
        "info_nce": lambda a: losses.info_nce(a, t, 0.2),
        "relational": lambda a: losses.relational_distance(a, t[:, :2]),
        "similarity": lambda a: losses.similarity_structure(a.reshape(2, 2, 5), nodes_t),
        "binary_kd": lambda a: losses.binary_kd(a[:, 0], t[:, 0], 2.0),
    }
    for name, fn in checks.items():
        assert torch.autograd.gradcheck(fn, (s,), fast_mode=True), name
