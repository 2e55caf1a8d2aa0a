"""Pieces of continual learning across sites (FORGE's regime): accuracy-matrix metrics, a conditional
generative model of FC matrices for replay (an FCM-VAE), and an exemplar memory. The training loop lives
with the trainer; nothing here trains a classifier.

Metrics follow FORGE's code (``forge/forge.py``): ``acc[i, j]`` = accuracy on site j after training on site i
(only j <= i is needed); ``aaa`` = mean over steps i of the mean accuracy on the sites seen so far;
``bwt`` = mean over j < T-1 of ``acc[T-1, j] - acc[j, j]``; ``last_avg_acc`` = mean of the last row.
Forgetting is Chaudhry et al.'s: mean over j < T-1 of ``max_{j <= i < T-1} acc[i, j] - acc[T-1, j]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..models import constructor_kwargs

# ----------------------------------------------------------------------------------------------- metrics


def continual_metrics(acc: np.ndarray | Sequence[Sequence[float]]) -> dict[str, float]:
    """AAA, BWT, forgetting and last average accuracy of a (T, T) accuracy matrix (upper triangle ignored)."""
    a = np.asarray(acc, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"the accuracy matrix must be square (T, T); got shape {a.shape}")
    t = a.shape[0]
    seen = [a[i, : i + 1].mean() for i in range(t)]
    if t == 1:
        return {"aaa": float(seen[0]), "bwt": 0.0, "forgetting": 0.0, "last_avg_acc": float(a[0, 0])}
    bwt = np.mean([a[t - 1, j] - a[j, j] for j in range(t - 1)])
    forgetting = np.mean([a[j : t - 1, j].max() - a[t - 1, j] for j in range(t - 1)])
    return {
        "aaa": float(np.mean(seen)),
        "bwt": float(bwt),
        "forgetting": float(forgetting),
        "last_avg_acc": float(a[t - 1].mean()),
    }


# ------------------------------------------------------------------------------------------------ FCM-VAE


class FCMVAE(nn.Module):
    """Conditional VAE of FC matrices after FORGE's FCM-VAE: a self-attention encoder over FC rows (ROI tokens,
    plus a class token), a latent Gaussian, and a low-rank decoder ``U U^T`` giving Fisher-z values; matrices are
    returned as correlations (``tanh``, unit diagonal) or Fisher z (diagonal 0), as ``space`` says.
    Smaller than FORGE's (no Laplacian eigenvectors, Gaussian instead of Poisson likelihood): biokd's design."""

    def __init__(
        self,
        n_rois: int,
        n_classes: int = 2,
        d_model: int = 64,
        n_heads: int = 4,
        depth: int = 1,
        latent_dim: int = 32,
        rank: int = 8,
        beta_kl: float = 0.5,
        space: str = "correlation",
    ):
        super().__init__()
        self.config = constructor_kwargs(locals())
        if space not in ("correlation", "fisher_z"):
            raise ValueError(f"space must be 'correlation' or 'fisher_z'; got {space!r}")
        self.n_rois, self.n_classes, self.rank, self.beta_kl, self.space = n_rois, n_classes, rank, beta_kl, space
        self.tokens = nn.Linear(n_rois, d_model)
        self.class_token = nn.Embedding(n_classes, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, 0.0, batch_first=True, norm_first=True)
        self.encoder = nn.ModuleList(
            [layer]
            + [
                nn.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, 0.0, batch_first=True, norm_first=True)
                for _ in range(depth - 1)
            ]
        )
        self.to_latent = nn.Linear(d_model, 2 * latent_dim)
        self.class_latent = nn.Embedding(n_classes, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, 128), nn.GELU(), nn.Linear(128, n_rois * rank))
        self.offset = nn.Parameter(torch.zeros(1))
        self.register_buffer("off_diag", ~torch.eye(n_rois, dtype=torch.bool), persistent=False)

    def to_z(self, fc: torch.Tensor) -> torch.Tensor:
        """Fisher-z view of input matrices in the model's space (diagonal 0)."""
        z = torch.atanh(fc.clamp(-0.999999, 0.999999)) if self.space == "correlation" else fc
        return z.masked_fill(~self.off_diag, 0.0)

    def encode(self, fc: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.class_token(labels)[:, None], self.tokens(self.to_z(fc))], dim=1)
        for layer in self.encoder:
            x = layer(x)
        mu, logvar = self.to_latent(x.mean(dim=1)).chunk(2, dim=-1)
        return mu, logvar.clamp(-8, 8)

    def decode_z(self, latent: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Fisher-z matrices (B, R, R), symmetric by construction (low rank U U^T plus an offset), diagonal 0."""
        u = self.decoder(latent + self.class_latent(labels)).view(-1, self.n_rois, self.rank)
        z = u @ u.transpose(1, 2) / self.rank**0.5 + self.offset
        return z.masked_fill(~self.off_diag, 0.0)

    def output(self, z: torch.Tensor) -> torch.Tensor:
        if self.space == "fisher_z":
            return z
        return torch.tanh(z).masked_fill(~self.off_diag, 1.0)

    def forward(self, fc: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(fc, labels)
        latent = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.output(self.decode_z(latent, labels)), mu, logvar

    def loss(self, fc: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Gaussian reconstruction in Fisher z (off-diagonal mean squared error) + beta_kl * KL per latent unit."""
        mu, logvar = self.encode(fc, labels)
        latent = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = F.mse_loss(self.decode_z(latent, labels)[:, self.off_diag], self.to_z(fc)[:, self.off_diag])
        kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
        total = recon + self.beta_kl * kl
        return total, {"recon": float(recon.detach()), "kl": float(kl.detach())}

    @torch.no_grad()
    def sample(self, n: int, label: int | Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` generated FC matrices of class ``label`` (an int, or one label per sample)."""
        labels = torch.as_tensor([label] * n if isinstance(label, int) else list(label), dtype=torch.long)
        if len(labels) != n or labels.min() < 0 or labels.max() >= self.n_classes:
            raise ValueError(f"labels must be {n} values in [0, {self.n_classes}); got {labels.tolist()}")
        device = self.offset.device
        latent = torch.randn(n, self.class_latent.embedding_dim, generator=generator).to(device)
        return self.output(self.decode_z(latent, labels.to(device)))


def train_fcm_vae(
    model: FCMVAE,
    fc: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 16,
    seed: int = 0,
) -> list[float]:
    """Fit the generative model on one site's (training) matrices; returns the mean loss of each epoch."""
    torch.manual_seed(seed)
    x = torch.as_tensor(np.asarray(fc), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        losses = []
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss, _ = model.loss(x[idx], y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()) * len(idx))
        history.append(sum(losses) / len(x))
    model.eval()
    return history


# ---------------------------------------------------------------------------------------- exemplar memory


@dataclass
class ExemplarMemory:
    """A bounded memory of past-site exemplars (FC matrices, labels, sites, and cached teacher outputs).

    ``policy="reservoir"``: reservoir sampling over the stream (Vitter's algorithm R, seeded).
    ``policy="herding"``: per (site, class), exemplars in herding order (iCaRL): each next one brings the mean
    of those chosen closest to the group mean of the features; the capacity is shared equally among groups
    and each group keeps a prefix of its order.
    """

    capacity: int
    policy: str = "reservoir"
    seed: int = 0
    items: list[dict[str, np.ndarray | int | str]] = field(default_factory=list)
    _seen: int = 0

    def __post_init__(self) -> None:
        if self.policy not in ("reservoir", "herding"):
            raise ValueError(f"policy must be 'reservoir' or 'herding'; got {self.policy!r}")
        self._rng = np.random.default_rng(self.seed)
        self._groups: dict[tuple[str, int], list[dict]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def add(
        self, fc: np.ndarray, labels: np.ndarray, site: str, features: np.ndarray | None = None, **cached: np.ndarray
    ) -> None:
        """Offer one site's items; ``cached`` holds per-item arrays (e.g. teacher ``logits``, ``embedding``)."""
        records = [
            {"fc": fc[i], "label": int(labels[i]), "site": str(site), **{k: v[i] for k, v in cached.items()}}
            for i in range(len(fc))
        ]
        if self.policy == "reservoir":
            for record in records:
                self._seen += 1
                if len(self.items) < self.capacity:
                    self.items.append(record)
                else:
                    j = int(self._rng.integers(0, self._seen))
                    if j < self.capacity:
                        self.items[j] = record
            return
        feats = np.asarray(features if features is not None else fc.reshape(len(fc), -1), dtype=np.float64)
        for label in sorted(set(int(v) for v in labels)):
            idx = np.flatnonzero(np.asarray(labels) == label)
            self._groups[(str(site), label)] = [records[i] for i in idx[herding_order(feats[idx])]]
        per_group = max(1, self.capacity // max(1, len(self._groups)))
        self.items = [r for key in sorted(self._groups) for r in self._groups[key][:per_group]][: self.capacity]

    def arrays(self) -> dict[str, np.ndarray]:
        """The memory as stacked arrays (``fc``, ``label``, ``site`` and every cached key)."""
        if not self.items:
            return {}
        return {key: np.stack([np.asarray(r[key]) for r in self.items]) for key in self.items[0]}

    def sample(self, n: int) -> dict[str, np.ndarray]:
        """``n`` items drawn with replacement from the memory (seeded)."""
        if not self.items:
            raise ValueError("the exemplar memory is empty")
        pick = self._rng.integers(0, len(self.items), n)
        full = self.arrays()
        return {k: v[pick] for k, v in full.items()}


def herding_order(features: np.ndarray) -> np.ndarray:
    """Herding (Welling 2009; iCaRL): indices so that each prefix's mean best approximates the full mean."""
    mean = features.mean(axis=0)
    chosen: list[int] = []
    total = np.zeros_like(mean)
    available = np.ones(len(features), dtype=bool)
    for k in range(1, len(features) + 1):
        dist = np.linalg.norm(mean - (total + features) / k, axis=1)
        dist[~available] = np.inf
        i = int(np.argmin(dist))
        chosen.append(i)
        total += features[i]
        available[i] = False
    return np.asarray(chosen)
