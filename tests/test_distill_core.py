"""Distillation core on tiny models: taps, each loss on known inputs, router, distiller, trainer resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from biokd.config import from_dict, load_config
from biokd.data.spec import TargetSpec
from biokd.distill import losses
from biokd.distill.distiller import Distiller
from biokd.distill.router import LayerRouter
from biokd.distill.taps import Taps
from biokd.distill.terms import KD, Connectivity, Feature, Spectral, TaskLoss, Term
from biokd.errors import ConfigError, LeakageError
from biokd.splits import check_no_leakage
from biokd.tasks import task_for
from biokd.trainer import Supervised, TrainConfig, fit


class Tokens(nn.Module):
    """(B, C, T) → (B, C, S, D) tokens by cutting T into S patches and projecting each."""

    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.patch, self.proj = patch, nn.Linear(patch, dim)

    def forward(self, x):
        b, c, t = x.shape
        return self.proj(x.reshape(b, c, t // self.patch, self.patch))


class TinyNet(nn.Module):
    input_keys = ("eeg",)

    def __init__(self, dim: int, n_layers: int = 2, n_classes: int = 3, patch: int = 8):
        super().__init__()
        self.tokens = Tokens(patch, dim)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.GELU()) for _ in range(n_layers))
        self.head = nn.Linear(dim, n_classes)

    def forward(self, eeg):
        h = self.tokens(eeg)
        for layer in self.layers:
            h = h + layer(h)
        return self.head(h.mean(dim=(1, 2)))


class ToyEEG(Dataset):
    """Class-dependent offset and rhythm on every channel plus noise; one subject per 10 items."""

    def __init__(self, n: int, seed: int, subject_offset: int = 0):
        rng = np.random.default_rng(seed)
        self.y = rng.integers(0, 3, n)
        t = np.arange(32) / 32
        x = rng.normal(0, 0.5, (n, 4, 32)).astype(np.float32)
        x += (0.6 * (self.y[:, None, None] - 1) + np.sin(2 * np.pi * (2 + 3 * self.y[:, None, None]) * t)).astype(
            np.float32
        )
        self.x = torch.from_numpy(x)
        self.subjects = sorted({f"S{subject_offset + i // 10:03d}" for i in range(n)})
        self._subject = [f"S{subject_offset + i // 10:03d}" for i in range(n)]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"eeg": self.x[i], "label": int(self.y[i]), "subject": self._subject[i], "index": i}


#: Three classes; validation is scored by the task (balanced accuracy, κ, ...): chance is 1/3.
TASK = task_for(TargetSpec(kind="classification", classes=["a", "b", "c"]))


def test_taps_capture_and_reject_unknown_paths():
    net = TinyNet(8)
    with Taps(net, ["layers.0", "layers.1"]) as taps:
        net(torch.randn(2, 4, 32))
        out = taps.pop()
    assert out["layers.1"].shape == (2, 4, 4, 8)
    assert taps.outputs == {}
    with pytest.raises(KeyError, match=r"Did you mean 'layers\.1'"):
        Taps(net, ["layers.1x"])


def test_kd_kl_matches_definition_and_scales_with_t_squared():
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    T = 3.0
    p_t = (t / T).softmax(-1)
    manual = (p_t * (p_t.log() - (s / T).log_softmax(-1))).sum(-1).mean() * T * T
    assert torch.allclose(losses.kd_kl(s, t, T), manual, atol=1e-6)
    assert losses.kd_kl(t, t, T).item() == pytest.approx(0.0, abs=1e-6)


def test_spectral_loss_zero_for_identical_positive_for_phase_shift():
    time = torch.arange(64, dtype=torch.float32) / 64
    x = torch.stack([torch.sin(2 * math.pi * f * time) for f in (3, 5, 9)], dim=-1)[None]  # (1, 64, 3)
    assert losses.spectral_loss(x, x, sfreq=64.0, dim=1).item() == pytest.approx(0.0, abs=1e-5)
    shifted = torch.roll(x, 4, dims=1)
    mag_only = losses.spectral_loss(x, shifted, sfreq=64.0, dim=1, phase=0.0).item()
    both = losses.spectral_loss(x, shifted, sfreq=64.0, dim=1).item()
    assert mag_only == pytest.approx(0.0, abs=1e-5)  # a circular shift keeps magnitudes...
    assert both > 0.1  # ...and moves phases


def test_band_weights_follow_eeg_bands():
    w = losses.band_weights(200, 200.0, {"alpha": 2.0, "beta": 0.5})
    freqs = torch.fft.rfftfreq(200, 1 / 200)
    assert w[freqs == 10].item() == 2.0 and w[freqs == 20].item() == 0.5 and w[freqs == 50].item() == 0.0
    with pytest.raises(ConfigError, match="known bands"):
        losses.band_weights(200, 200.0, {"mu": 1.0})


def test_connectivity_loss_sees_channel_structure():
    x = torch.randn(2, 6, 40)
    assert losses.connectivity_loss(x, x * 3 + 1).item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    mixed = x.clone()
    mixed[:, 1] = x[:, 0] + 0.1 * x[:, 1]
    assert losses.connectivity_loss(x, mixed).item() > 1e-3


def test_router_weights_sum_to_one_and_move_under_training():
    torch.manual_seed(0)
    router = LayerRouter(n_layers=3, dim=8)
    layers = torch.randn(16, 3, 5, 8)
    target = layers[:, 2]  # the best layer to route to is the third
    opt = torch.optim.Adam(router.parameters(), lr=0.05)
    _, w0 = router(layers)
    for _ in range(60):
        agg, w = router(layers)
        loss = (agg - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.allclose(w.sum(1), torch.ones(16), atol=1e-6)
    assert w[:, 2].mean() > w0[:, 2].mean() + 0.3


def test_router_learns_which_teacher_layer_carries_the_task():
    """Layer 0 is noise, layer 1 encodes the label: the task probe drives the router to layer 1."""
    torch.manual_seed(0)
    term = Feature(name="routed", teacher=["layers.0", "layers.1"], student="layers.0")
    distiller = Distiller(TinyNet(6, n_layers=1), TinyNet(16), [term], TASK)
    batch = {"eeg": torch.randn(32, 4, 32), "label": torch.arange(32) % 3}
    distiller.setup(batch)
    opt = torch.optim.Adam(distiller.parameters(), lr=1e-2)
    signal = torch.nn.functional.one_hot(batch["label"], 16).float()[:, None, None, :].expand(32, 4, 4, 16)
    for step in range(150):
        g = torch.Generator().manual_seed(step)
        noise = torch.randn(32, 4, 4, 16, generator=g)
        views = {"output": torch.zeros(32, 3), "view:routed": torch.stack([noise, signal + 0.3 * noise], dim=1)}
        loss, _ = distiller.training_step(batch, views)
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights = distiller.last_router_weights["routed"]
    assert torch.allclose(weights.sum(1), torch.ones(32), atol=1e-5)
    assert weights[:, 1].mean() > 0.8


def _distill_terms():
    return [
        TaskLoss(name="task", label_smoothing=0.1),
        KD(name="kd", temperature=2.0),
        Feature(name="feat", teacher=["layers.1"], student="layers.0", metric="cosine"),
        Feature(name="routed", teacher=["layers.0", "layers.1"], student="layers.0"),
        Spectral(name="spec", teacher=["layers.1"], student="layers.0", pool=[1], time_dim=1),
        Connectivity(name="conn", teacher=["layers.1"], student="layers.0"),
    ]


def test_distiller_projects_routes_and_freezes_teacher(tmp_path):
    torch.manual_seed(0)
    teacher, student = TinyNet(16), TinyNet(6, n_layers=1)
    distiller = Distiller(student, teacher, _distill_terms(), TASK)
    batch = {"eeg": torch.randn(4, 4, 32), "label": torch.tensor([0, 1, 2, 0])}
    distiller.setup(batch)
    assert set(distiller.projections) == {"feat", "routed", "spec"}  # width 6 → 16; conn needs none
    assert set(distiller.routers) == {"routed"}
    distiller.train()
    assert not distiller.teacher.training
    loss, logs = distiller.training_step(batch)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert set(logs) == {"task", "kd", "feat", "routed", "spec", "conn", "routed.router_probe", "loss"}
    assert set(distiller.probes) == {"routed"}
    assert distiller.last_router_weights["routed"].shape == (4, 2)


def test_distiller_mismatched_axes_and_empty_terms_are_config_errors():
    with pytest.raises(ConfigError, match="at least the task loss"):
        Distiller(TinyNet(6), TinyNet(16), [], TASK)
    term = [Feature(name="f", teacher=["layers.1"], student="layers.0")]
    coarse_student = Distiller(TinyNet(6, patch=16), TinyNet(16), term, TASK)  # 2 patches against the teacher's 4
    with pytest.raises(ConfigError, match="all axes but the last must agree"):
        coarse_student.setup({"eeg": torch.randn(2, 4, 32)})
    pooled = [Feature(name="f", teacher=["layers.1"], student="layers.0", pool=[2])]
    Distiller(TinyNet(6, patch=16), TinyNet(16), pooled, TASK).setup({"eeg": torch.randn(2, 4, 32)})


def _fit_distiller(tmp_path, epochs, stop_after=None):
    torch.manual_seed(0)
    teacher = TinyNet(16)
    fit(
        Supervised(teacher, TASK),
        ToyEEG(60, 0),
        ToyEEG(30, 1, 10),
        TrainConfig(epochs=6, batch_size=16, lr=1e-2, select_metric="balanced_accuracy", progress=False),
        tmp_path / "teacher",
        TASK,
        log=lambda m: None,
    )
    torch.manual_seed(1)
    distiller = Distiller(TinyNet(6, n_layers=1), teacher, _distill_terms(), TASK)
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=1e-2, select_metric="balanced_accuracy", progress=False)
    result = fit(
        distiller,
        ToyEEG(60, 0),
        ToyEEG(30, 1, 10),
        cfg,
        tmp_path / "student",
        TASK,
        log=lambda m: None,
        stop_after_epoch=stop_after,
    )
    return distiller, result


def test_distillation_loss_falls_and_student_beats_chance(tmp_path):
    _, result = _fit_distiller(tmp_path, epochs=12)
    losses_ = [h["train_loss"] for h in result.history]
    assert losses_[-1] < 0.8 * losses_[0]
    assert result.best_metrics["balanced_accuracy"] > 0.6  # chance is 1/3
    assert (tmp_path / "student" / "checkpoints" / "best.pt").is_file()


def test_resume_after_interruption_gives_identical_weights(tmp_path):
    full, _ = _fit_distiller(tmp_path / "a", epochs=4)
    _fit_distiller(tmp_path / "b", epochs=4, stop_after=2)  # "killed" after epoch 2
    resumed, result = _fit_distiller(tmp_path / "b", epochs=4)
    assert result.resumed_from == 1
    for (k, a), b in zip(full.student.state_dict().items(), resumed.student.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_training_refuses_subject_leakage(tmp_path):
    with pytest.raises(LeakageError, match="subject S000 in train and val"):
        fit(
            Supervised(TinyNet(4), TASK),
            ToyEEG(20, 0),
            ToyEEG(20, 1),
            TrainConfig(epochs=1, progress=False),
            tmp_path,
            TASK,
        )
    check_no_leakage({"train": ["a", "b"], "val": ["c"]})


def test_config_validation_names_bad_keys(tmp_path):
    cfg = from_dict(TrainConfig, {"epochs": 3, "lr": 1})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    with pytest.raises(ConfigError, match=r"unknown config key 'epoch'\. Did you mean 'epochs'"):
        from_dict(TrainConfig, {"epoch": 3})
    with pytest.raises(ConfigError, match="batch_size: expected int, got 'big'"):
        from_dict(TrainConfig, {"batch_size": "big"})
    with pytest.raises(ConfigError, match="split_by: must be one of"):
        from_dict(TrainConfig, {"split_by": "random"})
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 2\nlr: 0.1\n")
    cfg = load_config(TrainConfig, path, ["lr=1e-3", "amp=false"])
    assert (cfg.epochs, cfg.lr, cfg.amp) == (2, 1e-3, False)
    spectral = {"name": "s", "kind": "spectral", "teacher": ["layers.1"], "student": "layers.0", "bands": {"alpha": 1}}
    term = Term.from_config({**spectral, "sfreq": 200}, "distill.terms[0]")
    assert isinstance(term, Spectral) and term.bands == {"alpha": 1} and term.sfreq == 200.0
    with pytest.raises(ConfigError, match="band weights need `sfreq`"):
        Term.from_config(spectral, "distill.terms[0]")
