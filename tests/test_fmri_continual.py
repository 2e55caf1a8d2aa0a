"""Continual-learning pieces: metrics on a hand-computed matrix, the FCM-VAE, the exemplar memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biokd.fmri.continual import FCMVAE, ExemplarMemory, continual_metrics, herding_order, train_fcm_vae


def test_metrics_against_hand_computed_matrix() -> None:
    acc = np.array(
        [
            [0.80, 0.00, 0.00],
            [0.70, 0.90, 0.00],
            [0.60, 0.85, 0.75],
        ]
    )
    m = continual_metrics(acc)
    # AAA: mean of 0.80, (0.70 + 0.90) / 2 = 0.80, (0.60 + 0.85 + 0.75) / 3 = 0.7333...
    assert m["aaa"] == pytest.approx((0.80 + 0.80 + 2.20 / 3) / 3)
    # BWT: ((0.60 - 0.80) + (0.85 - 0.90)) / 2 = -0.125
    assert m["bwt"] == pytest.approx(-0.125)
    # forgetting: site 0 best 0.80 -> 0.60 (0.20); site 1 best 0.90 -> 0.85 (0.05); mean 0.125
    assert m["forgetting"] == pytest.approx(0.125)
    assert m["last_avg_acc"] == pytest.approx(2.20 / 3)
    # forgetting differs from -BWT when a site improves before it is forgotten
    acc2 = np.array([[0.6, 0, 0], [0.9, 0.7, 0], [0.5, 0.7, 0.8]])
    m2 = continual_metrics(acc2)
    assert m2["forgetting"] == pytest.approx((0.4 + 0.0) / 2) and m2["bwt"] == pytest.approx((-0.1 + 0.0) / 2)
    with pytest.raises(ValueError, match="square"):
        continual_metrics(np.zeros((2, 3)))


def _toy_fc(n: int, rois: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    out = []
    for y in labels:
        x = rng.standard_normal((80, rois))
        x[:, :3] += (1.5 if y else 0.0) * rng.standard_normal((80, 1))
        out.append(np.corrcoef(x, rowvar=False))
    return np.stack(out).astype(np.float32), labels


def test_fcm_vae_learns_and_samples_valid_matrices() -> None:
    torch.manual_seed(0)
    fc, labels = _toy_fc(32, 16, seed=0)
    model = FCMVAE(16, d_model=32, latent_dim=8, rank=4)
    history = train_fcm_vae(model, fc, labels, epochs=25, lr=3e-3, batch_size=8, seed=0)
    assert history[-1] < 0.6 * history[0]
    samples = model.sample(6, 1, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (6, 16, 16)
    torch.testing.assert_close(samples, samples.transpose(1, 2))
    torch.testing.assert_close(torch.diagonal(samples, dim1=1, dim2=2), torch.ones(6, 16))
    assert samples.abs().max() <= 1.0
    # the class condition carries the planted block: class 1 samples correlate ROIs 0-2 more than class 0
    many = {y: model.sample(64, y, generator=torch.Generator().manual_seed(1)) for y in (0, 1)}
    block = {y: many[y][:, 0, 1:3].mean().item() for y in (0, 1)}
    assert block[1] > block[0]
    fz = FCMVAE(16, space="fisher_z").sample(2, [0, 1])
    torch.testing.assert_close(torch.diagonal(fz, dim1=1, dim2=2), torch.zeros(2, 16))


def test_reservoir_memory_is_bounded_seeded_and_mixed() -> None:
    fc = np.arange(40, dtype=np.float32).reshape(40, 1, 1) * np.ones((1, 4, 4), np.float32)
    labels = np.arange(40) % 2
    runs = []
    for _ in range(2):
        mem = ExemplarMemory(capacity=10, policy="reservoir", seed=3)
        mem.add(fc[:20], labels[:20], "A", logits=np.zeros((20, 1)))
        mem.add(fc[20:], labels[20:], "B", logits=np.ones((20, 1)))
        runs.append(mem.arrays())
    assert len(runs[0]["fc"]) == 10
    np.testing.assert_array_equal(runs[0]["fc"], runs[1]["fc"])
    assert set(runs[0]["site"]) == {"A", "B"}
    np.testing.assert_array_equal(runs[0]["logits"][:, 0], (runs[0]["site"] == "B").astype(float))
    assert mem.sample(5)["fc"].shape == (5, 4, 4)


def test_herding_memory_balances_sites_and_classes() -> None:
    rng = np.random.default_rng(0)
    mem = ExemplarMemory(capacity=8, policy="herding")
    for site in ("A", "B"):
        fc = rng.standard_normal((12, 5, 5)).astype(np.float32)
        mem.add(fc, np.arange(12) % 2, site)
    items = mem.arrays()
    assert len(items["fc"]) == 8
    pairs = list(zip(items["site"].tolist(), items["label"].tolist(), strict=True))
    assert {p: pairs.count(p) for p in set(pairs)} == {("A", 0): 2, ("A", 1): 2, ("B", 0): 2, ("B", 1): 2}
    feats = rng.standard_normal((30, 4))
    order = herding_order(feats)
    assert sorted(order.tolist()) == list(range(30))
    prefix_err = np.linalg.norm(feats[order[:5]].mean(0) - feats.mean(0))
    random_err = np.mean(
        [np.linalg.norm(feats[rng.choice(30, 5, replace=False)].mean(0) - feats.mean(0)) for _ in range(50)]
    )
    assert prefix_err < random_err
