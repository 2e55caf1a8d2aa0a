"""Per-input router over teacher layers: softmax weights that aggregate several layers into one target.

Trains with the student and is dropped at export (it lives in the Distiller, not in the student).
"""

from __future__ import annotations

import torch
from torch import nn


class LayerRouter(nn.Module):
    """Score each of ``n_layers`` stacked teacher layers from its pooled descriptor; softmax over layers.

    ``forward(layers)`` takes ``(B, L, ..., D)`` and returns the weighted sum ``(B, ..., D)`` and the
    weights ``(B, L)``, which sum to one for every input.
    """

    def __init__(self, n_layers: int, dim: int, hidden: int = 64, temperature: float = 1.0):
        super().__init__()
        self.n_layers = n_layers
        self.temperature = temperature
        self.layer_embedding = nn.Parameter(torch.zeros(n_layers, dim))
        self.score = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, layers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layers.shape[1] != self.n_layers:
            raise ValueError(f"router built for {self.n_layers} layers, got {layers.shape[1]}")
        descriptor = layers.float().flatten(2, -2).mean(dim=2) if layers.dim() > 3 else layers.float()
        logits = self.score(descriptor + self.layer_embedding).squeeze(-1) / self.temperature
        weights = logits.softmax(dim=1)
        shape = weights.shape + (1,) * (layers.dim() - 2)
        return (weights.reshape(shape) * layers.float()).sum(dim=1), weights
