"""MRI-only student: a small 3-D ResNet from MONAI's networks, with a named ``embedding`` for feature taps.

The backbone is ``monai.networks.nets.ResNet`` (basic blocks, one per stage, narrow stages, strided first
convolution) without its classifier; ``embedding`` projects the pooled features to ``embed_dim`` (the tap the
distiller aligns with the teacher's fused embedding) and ``head`` gives one logit (binary) or K logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..models import constructor_kwargs


def _field(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)


def n_outputs_of(spec: Any) -> int:
    """1 for a binary target, the number of classes for a classification target."""
    target = _field(spec, "target")
    kind = _field(target, "kind")
    if kind == "binary":
        return 1
    if kind == "classification":
        return len(_field(target, "classes"))
    raise ConfigError(f"an MRI classifier needs a binary or classification target; the data spec says {kind!r}")


def input_shape_of(spec: Any, name: str) -> list[int]:
    for item in _field(spec, "inputs"):
        if _field(item, "name") == name:
            return list(_field(item, "shape"))
    names = [_field(i, "name") for i in _field(spec, "inputs")]
    raise ConfigError(f"the data spec has no input {name!r} (it has {names})")


class MriResNet(nn.Module):
    """Small 3-D ResNet on ``mri`` ``(B, 1, D, H, W)`` → logits ``(B, n_outputs)``."""

    input_keys = ("mri",)

    def __init__(
        self,
        n_outputs: int = 1,
        in_channels: int = 1,
        widths: Sequence[int] = (8, 16, 32, 64),
        layers: Sequence[int] = (1, 1, 1, 1),
        embed_dim: int = 128,
        first_kernel: int = 5,
        drop_prob: float = 0.1,
    ):
        super().__init__()
        self.config = constructor_kwargs(locals())
        from monai.networks.nets import ResNet

        if len(widths) != len(layers) or not widths:
            raise ConfigError(f"widths {list(widths)} and layers {list(layers)} must be non-empty and of equal length")
        self.in_channels = in_channels
        self.backbone = ResNet(
            block="basic",
            layers=list(layers),
            block_inplanes=list(widths),
            spatial_dims=3,
            n_input_channels=in_channels,
            conv1_t_size=first_kernel,
            conv1_t_stride=2,
            feed_forward=False,
        )
        self.embedding = nn.Sequential(nn.Linear(widths[-1], embed_dim), nn.LayerNorm(embed_dim), nn.GELU())
        self.head = nn.Sequential(nn.Dropout(drop_prob), nn.Linear(embed_dim, n_outputs))

    @classmethod
    def spec_sizes(cls, spec: Any) -> dict[str, Any]:
        """Channels of ``mri`` and outputs of the target, from the data spec."""
        return {"in_channels": input_shape_of(spec, "mri")[0], "n_outputs": n_outputs_of(spec)}

    @classmethod
    def from_spec(cls, spec: Any, **kwargs: Any) -> MriResNet:
        """Sizes from a data spec (``DataSpec`` or its dict): channels of ``mri``, outputs of the target."""
        kwargs.setdefault("in_channels", input_shape_of(spec, "mri")[0])
        kwargs.setdefault("n_outputs", n_outputs_of(spec))
        return cls(**kwargs)

    def forward(self, mri: torch.Tensor) -> torch.Tensor:
        if mri.dim() != 5 or mri.shape[1] != self.in_channels:
            raise ValueError(f"MriResNet expects mri (B, {self.in_channels}, D, H, W); got {tuple(mri.shape)}")
        return self.head(self.embedding(self.backbone(mri)))

    def layer_names(self) -> list[str]:
        """Submodules worth tapping, shallow to deep."""
        return ["backbone.layer3", "backbone.layer4", "embedding"]
