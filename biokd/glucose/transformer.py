"""The glucose teacher: a Transformer encoder over the OhioT1DM input channels, forecasting every horizon.

The window is cut into patches of ``patch_len`` steps (15 minutes by default), each a token.

Input key ``glucose_inputs``: float32 ``(B, 6, T)`` in raw units, channels
:data:`biokd.glucose.ohiot1dm.CHANNELS` (cgm mg/dL, cgm_mask, insulin U/5 min, carbs g/5 min, iob U,
cob g), oldest step first. Output: ``(B, n_outputs)`` forecasts in mg/dL, one per horizon, predicted as
a change from the last CGM value of the window. Channels are normalised inside ``forward`` with fixed
constants (``channel_shift``/``channel_scale``).

Feature for distillation: the submodule ``feature`` outputs ``(B, d_model)``, the pooled encoder state
(last step and mean over steps) after a projection; ``head`` maps it to the forecasts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..models import constructor_kwargs
from .ohiot1dm import CHANNEL_SCALE, CHANNEL_SHIFT, CHANNELS, input_sizes

#: Forecast changes are predicted in units of this many mg/dL.
DELTA_SCALE = 50.0


class GlucoseTransformer(nn.Module):
    """Transformer encoder teacher for multi-horizon glucose forecasting (see the module docstring)."""

    input_keys = ("glucose_inputs",)

    spec_sizes = staticmethod(input_sizes)

    def __init__(
        self,
        n_chans: int = len(CHANNELS),
        n_times: int = 36,
        n_outputs: int = 2,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 3,
        dim_feedforward: int = 128,
        patch_len: int = 3,
        drop_prob: float = 0.1,
        channel_shift: Sequence[float] = CHANNEL_SHIFT,
        channel_scale: Sequence[float] = CHANNEL_SCALE,
    ):
        super().__init__()
        if len(channel_shift) != n_chans or len(channel_scale) != n_chans:
            raise ValueError(f"channel_shift and channel_scale need {n_chans} values each")
        if n_times % patch_len:
            raise ValueError(f"n_times ({n_times}) must be a multiple of patch_len ({patch_len})")
        self.config = constructor_kwargs(locals())
        self.register_buffer("shift", torch.tensor(channel_shift, dtype=torch.float32).view(1, -1, 1))
        self.register_buffer("scale", torch.tensor(channel_scale, dtype=torch.float32).view(1, -1, 1))
        self.embed = nn.Conv1d(n_chans, d_model, patch_len, stride=patch_len)
        self.position = nn.Parameter(torch.randn(1, n_times // patch_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward, drop_prob, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.feature = nn.Sequential(nn.LayerNorm(2 * d_model), nn.Linear(2 * d_model, d_model), nn.GELU())
        self.head = nn.Linear(d_model, n_outputs)

    def forward(self, glucose_inputs: torch.Tensor) -> torch.Tensor:
        z = (glucose_inputs - self.shift) / self.scale
        h = self.encoder(self.embed(z).transpose(1, 2) + self.position)
        pooled = torch.cat([h[:, -1], h.mean(dim=1)], dim=-1)
        return glucose_inputs[:, 0, -1:] + DELTA_SCALE * self.head(self.feature(pooled))
