"""MiC, biokd's compact EEG student following the published "mimic then compress" description (DLink).

biokd's own design, not the authors' code (only the abstract is public). Each 1-s patch of each channel
becomes a ``d_model`` token through convolutions over time (as CBraMod's patch embedding does); a depthwise
convolution over the channel × patch grid adds position; a few criss-cross Transformer blocks attend across
channels (half the width) and across patches (the other half). The ``mimic`` module's output ``(B, C, S,
d_model)`` is the representation the distiller aligns with the teacher's patch representations. The
``compress`` module then shrinks it spatio-temporally (per-token features ``d_model -> compress_dim``,
channels ``C -> spatial_filters``) and a small MLP ``classifier`` gives the logits.

Export-friendly: no FFT, no data-dependent control flow, attention through
``F.scaled_dot_product_attention``; only the batch dimension varies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models import constructor_kwargs
from .cbramod import check_eeg_shape, eeg_sizes


class _SelfAttention(nn.Module):
    """Multi-head self-attention over the middle axis of ``(N, L, dim)``."""

    def __init__(self, dim: int, n_heads: int, drop_prob: float):
        super().__init__()
        self.n_heads, self.drop_prob = n_heads, drop_prob
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length, dim = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(-1, length, 3, self.n_heads, dim // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.drop_prob if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(-1, length, dim))


class CrissCrossBlock(nn.Module):
    """Pre-norm block: half the features attend across channels, half across patches; then a feed-forward."""

    def __init__(self, d_model: int, n_heads: int, ff_mult: int, drop_prob: float):
        super().__init__()
        half = d_model // 2
        self.norm1 = nn.LayerNorm(d_model)
        self.spatial = _SelfAttention(half, n_heads // 2, drop_prob)
        self.temporal = _SelfAttention(half, n_heads // 2, drop_prob)
        self.drop = nn.Dropout(drop_prob)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model),
            nn.GELU(),
            nn.Dropout(drop_prob),
            nn.Linear(ff_mult * d_model, d_model),
            nn.Dropout(drop_prob),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_chans, n_patches, d_model = x.shape[1], x.shape[2], x.shape[3]
        half = d_model // 2
        h = self.norm1(x)
        hs = h[..., :half].transpose(1, 2).reshape(-1, n_chans, half)  # (B·S, C, half)
        hs = self.spatial(hs).reshape(-1, n_patches, n_chans, half).transpose(1, 2)
        ht = h[..., half:].reshape(-1, n_patches, half)  # (B·C, S, half)
        ht = self.temporal(ht).reshape(-1, n_chans, n_patches, half)
        x = x + self.drop(torch.cat([hs, ht], dim=-1))
        return x + self.ff(self.norm2(x))


class PatchEncoder(nn.Module):
    """``(B, C, S·P)`` → ``(B, C, S, d_model)``: strided convolutions within each patch, then a linear map."""

    def __init__(self, n_chans: int, n_patches: int, patch_size: int, d_model: int, conv_channels: int):
        super().__init__()
        self.n_chans, self.n_patches, self.patch_size = n_chans, n_patches, patch_size
        kernel = patch_size // 4 - (patch_size // 4 + 1) % 2  # odd; 49 for 200-sample patches, as in CBraMod
        stride = max(1, patch_size // 8)  # 25
        width = (patch_size + 2 * (kernel // 2) - kernel) // stride + 1  # 8 for 200-sample patches
        groups = 4 if conv_channels % 4 == 0 else 1
        layers: list[nn.Module] = [
            nn.Conv2d(1, conv_channels, (1, kernel), stride=(1, stride), padding=(0, kernel // 2)),
            nn.GroupNorm(groups, conv_channels),
            nn.GELU(),
        ]
        for _ in range(2):
            layers += [
                nn.Conv2d(conv_channels, conv_channels, (1, 3), padding=(0, 1)),
                nn.GroupNorm(groups, conv_channels),
                nn.GELU(),
            ]
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(conv_channels * width, d_model)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        # All patches of a window in one image (B, 1, C·S, P): the group norms use per-window statistics.
        x = self.convs(eeg.reshape(-1, 1, self.n_chans * self.n_patches, self.patch_size))
        x = x.permute(0, 2, 1, 3).reshape(-1, self.n_chans, self.n_patches, x.shape[1] * x.shape[3])
        return self.proj(x)


class Compress(nn.Module):
    """``(B, C, S, d)`` → ``(B, S·r·c')``: features ``d -> r`` per token, channels ``C -> c'`` per patch."""

    def __init__(self, n_chans: int, d_model: int, compress_dim: int, spatial_filters: int):
        super().__init__()
        self.features = nn.Linear(d_model, compress_dim)
        self.spatial = nn.Linear(n_chans, spatial_filters)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).permute(0, 2, 3, 1)  # (B, S, r, C)
        return self.act(self.spatial(x)).flatten(1)


class MiC(nn.Module):
    """Mimic-then-compress EEG student: conv patch encoder, criss-cross Transformer, compression head.

    Input ``eeg`` ``(B, n_chans, n_times)`` at ``sfreq`` (200 Hz, CBraMod units), ``n_times`` a multiple of
    ``patch_size``. Tap ``mimic`` for the patch representation ``(B, C, S, d_model)``.
    """

    input_keys = ("eeg",)

    spec_sizes = staticmethod(eeg_sizes)

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        n_outputs: int,
        sfreq: float = 200.0,
        patch_size: int = 200,
        d_model: int = 64,
        depth: int = 2,
        n_heads: int = 4,
        ff_mult: int = 2,
        drop_prob: float = 0.1,
        conv_channels: int = 8,
        pos_kernel: tuple[int, int] | list[int] = (7, 3),
        compress_dim: int = 16,
        spatial_filters: int = 16,
        hidden: int = 464,
    ):
        super().__init__()
        _check_config(n_chans, n_times, n_outputs, patch_size, d_model, depth, n_heads, pos_kernel)
        self.config = constructor_kwargs(locals())
        self.n_chans, self.n_times, self.sfreq = int(n_chans), int(n_times), float(sfreq)
        self.n_patches = self.n_times // patch_size
        self.d_model = int(d_model)
        kc, ks = (int(k) for k in pos_kernel)

        self.patch_encoder = PatchEncoder(n_chans, self.n_patches, patch_size, d_model, conv_channels)
        self.position = nn.Conv2d(d_model, d_model, (kc, ks), padding=(kc // 2, ks // 2), groups=d_model)
        self.encoder = nn.ModuleList(CrissCrossBlock(d_model, n_heads, ff_mult, drop_prob) for _ in range(depth))
        self.mimic = nn.LayerNorm(d_model)
        self.compress = Compress(n_chans, d_model, compress_dim, spatial_filters)
        self.classifier = nn.Sequential(
            nn.Dropout(drop_prob),
            nn.Linear(self.n_patches * compress_dim * spatial_filters, hidden),
            nn.GELU(),
            nn.Dropout(drop_prob),
            nn.Linear(hidden, n_outputs),
        )

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        check_eeg_shape(eeg, self.n_chans, self.n_times, "MiC student", self.sfreq)
        x = self.patch_encoder(eeg)
        x = x + self.position(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        for block in self.encoder:
            x = block(x)
        return self.classifier(self.compress(self.mimic(x)))

    def layer_names(self) -> list[str]:
        """Hookable module paths: each encoder block, then ``mimic``; all output ``(B, C, S, d_model)``."""
        return [f"encoder.{i}" for i in range(len(self.encoder))] + ["mimic"]


def _check_config(n_chans, n_times, n_outputs, patch_size, d_model, depth, n_heads, pos_kernel) -> None:
    problems = []
    if patch_size < 8 or n_times < patch_size or n_times % patch_size:
        problems.append(f"n_times={n_times} is not a positive multiple of patch_size={patch_size}")
    if min(n_chans, n_outputs, depth) < 1:
        problems.append(f"need n_chans, n_outputs, depth >= 1; got {n_chans}, {n_outputs}, {depth}")
    if n_heads < 2 or n_heads % 2 or d_model % 2 or (d_model // 2) % (n_heads // 2):
        problems.append(f"n_heads={n_heads} must be even and n_heads/2 must divide d_model/2 (d_model={d_model})")
    if len(pos_kernel) != 2 or any(k < 1 or k % 2 == 0 for k in pos_kernel):
        problems.append(f"pos_kernel={list(pos_kernel)} must be two odd sizes (channels, patches)")
    if problems:
        raise ConfigError("MiC: " + "; ".join(problems))
