"""Per-input router over teacher layers: softmax weights that aggregate several layers into one target.

Layers are normalised to unit RMS per input before they are scored and mixed, so a weight compares the
contributions of layers on one scale: a layer whose outputs are 100 times larger gets no more of the mixture
for that. Trains with the student and is dropped at export (it lives in the Distiller, not in the student).
"""

from __future__ import annotations

import torch
from torch import nn

#: Caption for plots of router weights.
CAPTION = (
    "Router weights over teacher layer outputs, each normalised to unit RMS per input before mixing "
    "(a weight is the layer's share of the unit-scale mixture; rows: mean over the inputs of a class)."
)


def normalize_layers(layers: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each layer of each input ``(B, L, ...)`` by its root mean square over all its other axes."""
    if layers.dim() < 3:
        raise ValueError(f"router layers must be (B, L, ..., D); got shape {tuple(layers.shape)}")
    dims = tuple(range(2, layers.dim()))
    return layers * layers.pow(2).mean(dim=dims, keepdim=True).clamp_min(eps).rsqrt()


class LayerRouter(nn.Module):
    """Score each of ``n_layers`` stacked teacher layers from its pooled descriptor; softmax over layers.

    ``forward(layers)`` takes ``(B, L, ..., D)``, normalises each layer of each input to unit RMS
    (:func:`normalize_layers`), and returns the weighted sum of the normalised layers ``(B, ..., D)`` and
    the weights ``(B, L)``, which sum to one for every input. The mixture has the same value (and the
    weights are the same) whatever the scale of each layer.
    """

    caption = CAPTION

    def __init__(self, n_layers: int, dim: int, hidden: int = 64, temperature: float = 1.0):
        super().__init__()
        self.n_layers = n_layers
        self.temperature = temperature
        self.layer_embedding = nn.Parameter(torch.zeros(n_layers, dim))
        self.score = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, layers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layers.dim() < 3 or layers.shape[1] != self.n_layers:
            raise ValueError(f"router built for {self.n_layers} layers (B, L, ..., D); got {tuple(layers.shape)}")
        normed = normalize_layers(layers.float())
        descriptor = normed.flatten(2, -2).mean(dim=2) if normed.dim() > 3 else normed
        logits = self.score(descriptor + self.layer_embedding).squeeze(-1) / self.temperature
        weights = logits.softmax(dim=1)
        shape = weights.shape + (1,) * (layers.dim() - 2)
        return (weights.reshape(shape) * normed).sum(dim=1), weights
