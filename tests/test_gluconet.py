"""GlucoNet, its decomposition, the teacher and the baselines."""

from __future__ import annotations

import pytest
import torch

from biokd.batch import model_inputs
from biokd.distill.taps import Taps
from biokd.glucose.gluconet import (
    VMD,
    FoldedVMD,
    GlucoNet,
    LinearExtrapolation,
    Persistence,
    fold_vmd,
    median_centre_frequencies,
)
from biokd.glucose.transformer import GlucoseTransformer


def windows(batch: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(batch, 6, 36)
    t = torch.arange(36.0)
    x[:, 0] = 140 + 40 * torch.sin(2 * torch.pi * t / 50 + torch.rand(batch, 1, generator=g) * 6)
    x[:, 1] = 1.0
    x[:, 2] = 0.1
    x[:, 4] = 2.0
    return x


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_gluconet_parameter_count() -> None:
    model = GlucoNet()
    assert n_params(model) == 10_872
    assert abs(n_params(model) - 10_900) <= 0.05 * 10_900  # the paper's ~10.9 K
    low = sum(n_params(m) for m in (model.low_conv, model.low_lstm, model.low_head))
    assert low == 1_822  # conv 3→16→16, LSTM 16→8, MLP 8→4→2 (released lstm.pth: 1,872 with 12 outputs)


def test_gluconet_forward_config_and_tap() -> None:
    torch.manual_seed(0)
    model = GlucoNet().eval()
    x = windows()
    y = model(*model_inputs(model, {"glucose_inputs": x}))
    assert y.shape == (4, 2) and torch.isfinite(y).all()
    assert (y - x[:, 0, -1:]).abs().max() < 100  # a change from the last reading, in mg/dL
    clone = GlucoNet(**model.config).eval()
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone(x), y)
    with Taps(model, ["high_feature"]) as taps:
        model(x)
        assert taps.pop()["high_feature"].shape == (4, 32)


def test_vmd_splits_slow_from_fast_and_adds_up() -> None:
    t = torch.arange(36.0)
    slow = torch.sin(2 * torch.pi * t / 60)
    fast = 0.3 * torch.sin(2 * torch.pi * 0.3 * t)
    x = (slow + fast)[None]
    low, high = VMD()(x)
    torch.testing.assert_close(low + high, x)
    assert torch.corrcoef(torch.stack([low[0], slow]))[0, 1] > 0.95
    assert torch.corrcoef(torch.stack([high[0], fast]))[0, 1] > 0.9
    _, omega = VMD().modes_spectrum(x)
    assert omega[0, 0] == 0 and omega[0, -1] == pytest.approx(0.3, abs=0.02)  # the fast tone's frequency


def test_vmd_reads_each_window_only() -> None:
    """The decomposition of a window depends on that window alone (not on others in the batch)."""
    vmd = VMD()
    x = windows(5)[:, 0]
    low_all, _ = vmd(x)
    other = x.clone()
    other[1:] = other[1:] * 3 + 7
    low_changed, _ = vmd(other)
    # Equal up to float32 rounding (matrix products of other batch sizes may sum in another order).
    torch.testing.assert_close(low_all[0], low_changed[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(vmd(x[2:3])[0][0], low_all[2], rtol=1e-5, atol=1e-4)


def test_folded_vmd_reproduces_the_sweeps_with_fixed_centre_frequencies() -> None:
    """One T x T matrix equals the 30 fixed-frequency sweeps, to float tolerance, for any window."""
    omega = (0.0, 0.025, 0.07, 0.2)
    sweeps = VMD(omega_init=omega, update_omega=False)
    folded = FoldedVMD(omega=omega)
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(6, 36, generator=g), (windows(6)[:, 0] - 140) / 50])
    low_s, high_s = sweeps(x)
    low_f, high_f = folded(x)
    torch.testing.assert_close(low_f, low_s, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(high_f, high_s, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(low_f + high_f, x)
    # In float64 the agreement is exact up to rounding of the sweeps themselves.
    sweeps64 = VMD(omega_init=omega, update_omega=False, dtype=torch.float64)
    low64, _ = sweeps64(x.double())
    assert (low64 - x.double() @ torch.from_numpy(fold_vmd(omega=omega))).abs().max() < 1e-12
    # Fixing the frequencies is a real change: the adaptive decomposition differs on the same windows.
    assert (VMD(omega_init=omega)(x)[0] - low_s).abs().max() > 1e-2


def test_folded_vmd_is_causal_and_splits_slow_from_fast() -> None:
    t = torch.arange(36.0)
    slow, fast = torch.sin(2 * torch.pi * t / 60), 0.3 * torch.sin(2 * torch.pi * 0.3 * t)
    low, high = FoldedVMD()((slow + fast)[None])
    assert torch.corrcoef(torch.stack([low[0], slow]))[0, 1] > 0.95
    assert torch.corrcoef(torch.stack([high[0], fast]))[0, 1] > 0.9
    # Causal: the decomposition is of the window alone, so a later window cannot change an earlier one's bands.
    x = torch.randn(1, 40)
    torch.testing.assert_close(FoldedVMD()(x[:, :36])[0], FoldedVMD()(x[:, :36].clone())[0])


def test_gluconet_vmd_modes_and_checkpoint_guard() -> None:
    torch.manual_seed(0)
    folded = GlucoNet().eval()
    assert isinstance(folded.decompose, FoldedVMD) and folded.config["vmd_mode"] == "folded"
    torch.manual_seed(0)
    sweeps = GlucoNet(vmd_mode="sweeps").eval()
    assert isinstance(sweeps.decompose, VMD) and n_params(sweeps) == n_params(folded)
    x = windows()
    assert not torch.allclose(folded(x), sweeps(x))  # same weights, other decomposition
    with pytest.raises(ValueError, match="vmd_mode='sweeps'"):
        folded.load_state_dict(sweeps.state_dict())  # an old 30-sweep checkpoint never loads silently
    clone = GlucoNet(**folded.config).eval()
    clone.load_state_dict(folded.state_dict())
    assert torch.equal(clone(x), folded(x))
    with pytest.raises(ValueError, match="vmd_mode"):
        GlucoNet(vmd_mode="fft")


def test_median_centre_frequencies_follow_the_data() -> None:
    x = windows(8)
    t = torch.arange(36.0)
    x[:, 0] = 140 + 30 * torch.sin(2 * torch.pi * t / 72) + 8 * torch.sin(2 * torch.pi * 0.12 * t)
    omega = median_centre_frequencies(x)
    assert len(omega) == 4 and omega[0] == 0.0
    assert omega == sorted(omega)
    assert min(abs(w - 0.12) for w in omega[1:]) < 0.02  # one mode sits on the 0.12-cycle tone
    model = GlucoNet(vmd_omega=omega)
    assert model.config["vmd_omega"] == omega


def test_teacher_shapes_config_and_feature() -> None:
    teacher = GlucoseTransformer(n_layers=1).eval()
    x = windows()
    assert teacher(x).shape == (4, 2)
    assert teacher.config["n_layers"] == 1 and teacher.input_keys == ("glucose_inputs",)
    with Taps(teacher, ["feature"]) as taps:
        teacher(x)
        assert taps.pop()["feature"].shape == (4, 64)
    with pytest.raises(ValueError, match="multiple of patch_len"):
        GlucoseTransformer(n_times=35)


def test_persistence_and_linear_extrapolation() -> None:
    x = torch.zeros(2, 6, 36)
    x[:, 0] = 100 + 2 * torch.arange(36.0)  # +2 mg/dL per step, last 170
    x[:, 1] = 1.0
    x[1, 0, -1] = 500.0  # a filled value (mask 0) is ignored by the fit
    x[1, 1, -1] = 0.0
    assert Persistence()(x).tolist() == [[170.0, 170.0], [168.0, 168.0]]  # filled 500 skipped
    torch.testing.assert_close(LinearExtrapolation((6, 12))(x), torch.tensor([[182.0, 194.0], [182.0, 194.0]]))
    x[:, 1, -6:] = 0.0
    x[:, 1, -1] = 1.0  # one real reading: no slope, persistence of the last real... of the last value
    out = LinearExtrapolation((6, 12))(x)
    torch.testing.assert_close(out[0], torch.tensor([170.0, 170.0]))
