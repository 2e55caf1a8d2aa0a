"""Spectral and connectivity terms on a signal-rate view of EEG patch tokens (200 Hz, checked bands)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from biokd.distill.distiller import Distiller
from biokd.distill.terms import Connectivity, Spectral
from biokd.eeg.physionet_mi import PhysionetMIProtocol
from biokd.errors import ConfigError
from biokd.tasks import task_for

SFREQ, PATCH, N_CHANS, N_PATCHES = 200.0, 200, 16, 4
OTHER_BANDS = {"delta": 1.0, "theta": 1.0, "beta": 1.0, "gamma": 1.0}


class PatchTokens(nn.Module):
    """A stand-in EEG model: 200-sample patches mapped by a fixed invertible matrix to 200-wide tokens."""

    input_keys = ("eeg",)

    def __init__(self, seed: int, remove_alpha: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.mix = nn.Parameter(torch.linalg.qr(torch.randn(PATCH, PATCH, generator=g))[0], requires_grad=False)
        self.tokens = nn.Identity()
        self.head = nn.Linear(PATCH, 4)
        self.remove_alpha = remove_alpha

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        if self.remove_alpha:  # this model's representation has lost the alpha band (8-13 Hz) of the window
            spec = torch.fft.rfft(eeg, dim=-1)
            freqs = torch.fft.rfftfreq(eeg.shape[-1], d=1 / SFREQ)
            eeg = torch.fft.irfft(spec * ~((freqs >= 8) & (freqs < 13)), n=eeg.shape[-1], dim=-1)
        tokens = self.tokens(eeg.reshape(*eeg.shape[:2], N_PATCHES, PATCH) @ self.mix)
        return self.head(tokens.mean(dim=(1, 2)))


def _eeg(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, N_CHANS, N_PATCHES * PATCH, generator=torch.Generator().manual_seed(seed))


def _spectral_value(bands: dict[str, float]) -> float:
    torch.manual_seed(0)
    term = Spectral("spec", teacher=["tokens"], student="tokens", signal="eeg", bands=bands, phase=0.5)
    term.check(PhysionetMIProtocol().spec(), None)  # sfreq from the spec: the input's 200 Hz
    spec = PhysionetMIProtocol().spec()
    distiller = Distiller(PatchTokens(1, remove_alpha=True), PatchTokens(2), [term], task_for(spec))
    distiller.setup({"eeg": _eeg(64, 0)})  # decoders fitted on 4096 tokens of 200 features
    batch = {"eeg": _eeg(8, 1), "label": torch.zeros(8, dtype=torch.long)}
    with torch.no_grad():
        _, logs = distiller.training_step(batch)
    return logs["spec"]


def test_spectral_term_on_the_signal_rate_axis_sees_only_the_band_that_differs():
    assert Spectral("s", teacher=["t"], student="s", signal="eeg").sfreq is None
    alpha = _spectral_value({"alpha": 1.0})
    others = _spectral_value(OTHER_BANDS)
    assert alpha > 0.01  # about 20 of the 401 bins are alpha bins; the loss is a mean over all bins
    assert others < 0.01 * alpha  # the student lost only alpha: the other bands barely see it


def test_signal_rate_view_decodes_tokens_to_the_input_at_200_hz():
    spec = PhysionetMIProtocol().spec()
    term = Connectivity("conn", teacher=["tokens"], student="tokens", signal="eeg")
    term.check(spec, None)
    assert term.sfreq == SFREQ
    distiller = Distiller(PatchTokens(1), PatchTokens(2), [term], task_for(spec))
    distiller.setup({"eeg": _eeg(64, 0)})
    x = _eeg(4, 3)
    distiller.teacher(x)
    tokens = distiller._teacher_taps.pop()["tokens"]
    decoded = distiller.projections["conn__teacher"](tokens).flatten(-2)
    assert decoded.shape == x.shape  # (B, C, S·P): the input's own time axis
    assert torch.allclose(decoded, x, atol=1e-2)  # the teacher keeps all of the signal, so its view is the signal
    assert not any(p.requires_grad for p in distiller.projections["conn__teacher"].parameters())
    assert all(p.requires_grad for p in distiller.projections["conn"].parameters())  # the student's decoder trains
    batch = {"eeg": x, "label": torch.zeros(4, dtype=torch.long)}
    _, logs = distiller.training_step(batch)
    assert math.isfinite(logs["conn"]) and logs["conn"] < 1e-3  # same signal, same connectivity


def test_signal_rate_terms_refuse_bad_settings():
    spec = PhysionetMIProtocol().spec()
    with pytest.raises(ConfigError, match="differs from the 200 Hz"):
        Spectral("s", teacher=["t"], student="s", signal="eeg", sfreq=1.0).check(spec, None)
    with pytest.raises(ConfigError, match="no input 'ecg'"):
        Spectral("s", teacher=["t"], student="s", signal="ecg").check(spec, None)
    with pytest.raises(ConfigError, match="one teacher layer's unpooled"):
        Connectivity("c", teacher=["t"], student="s", signal="eeg", pool=[1])
    # on 1-s patch tokens (a 1 Hz axis) the alpha band is above Nyquist: an error, not a zero weight
    term = Spectral("s", teacher=["tokens"], student="tokens", sfreq=1.0, bands={"alpha": 1.0}, time_dim=-2, pool=[1])
    distiller = Distiller(PatchTokens(1), PatchTokens(2), [term], task_for(spec))
    with pytest.raises(ConfigError, match=r"band 'alpha'.*holds no frequency bin"):
        distiller.setup({"eeg": _eeg(2, 0)})


@pytest.mark.parametrize("name", ["physionet-mi-distill.yaml", "faced-distill.yaml"])
def test_shipped_eeg_configs_use_the_signal_rate_view_and_pass_their_checks(name):
    from pathlib import Path

    from biokd.config import load_config
    from biokd.eeg.faced import FacedProtocol
    from biokd.pipeline import RunConfig

    cfg = load_config(RunConfig, Path(__file__).parents[1] / "configs" / name)
    spec = (PhysionetMIProtocol() if name.startswith("physionet") else FacedProtocol()).spec()
    terms = {t.kind: t for t in cfg.distill.terms}
    for term in cfg.distill.terms:
        term.check(spec, task_for(spec))
    assert terms["spectral"].signal == terms["connectivity"].signal == "eeg"
    assert terms["spectral"].sfreq == SFREQ  # taken from the data: the bands were checked against 100 Hz
