"""Connectivity classifiers: a Brain-Network-Transformer-style teacher and a BrainNetCNN-style student.

Both take ``fc`` (B, R, R) and return logits (B, n_outputs); ``n_outputs=1`` is one logit for the positive
class (autism). Taps (forward hooks on named submodules): teacher ``encoder.layers.N`` (B, R, d) ROI tokens,
``readout`` (B, K, d) cluster embeddings, ``embedding`` (B, E) graph embedding; student ``e2e`` (B, C, R, R),
``e2n`` (B, C', R, 1), ``nodes`` (B, R, C') ROI node embeddings, ``embedding`` (B, E) graph embedding.
Written in plain torch: neither architecture ships in a maintained library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..models import constructor_kwargs


def spec_sizes(spec: Any) -> tuple[int, int]:
    """(n_rois, n_outputs) from a DataSpec or a plain dict ``{"inputs": [{"name": "fc", "shape": [R, R]}],
    "target": {"classes": [...], "kind": "binary"}}``; binary targets give one logit."""

    def get(obj: Any, key: str, default: Any = None) -> Any:
        return obj.get(key, default) if isinstance(obj, Mapping) else getattr(obj, key, default)

    inputs = {get(i, "name"): i for i in get(spec, "inputs", [])}
    if "fc" not in inputs:
        raise ValueError(f"the data spec has no 'fc' input (inputs: {sorted(inputs)})")
    shape = list(get(inputs["fc"], "shape"))
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"'fc' must be (R, R) per item; the spec says {shape}")
    target = get(spec, "target", {})
    classes = list(get(target, "classes", []) or [])
    kind = get(target, "kind", "binary" if len(classes) == 2 else "classification")
    n_outputs = 1 if kind == "binary" or len(classes) == 2 else len(classes)
    return int(shape[0]), n_outputs


def _check_fc(fc: torch.Tensor, n_rois: int, name: str) -> None:
    if fc.ndim != 3 or fc.shape[1] != n_rois or fc.shape[2] != n_rois:
        raise ValueError(f"{name} expects fc of shape (B, {n_rois}, {n_rois}); got {tuple(fc.shape)}")


class _Encoder(nn.Module):
    def __init__(self, d_model: int, n_heads: int, depth: int, ff_dim: int, drop_prob: float):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, n_heads, ff_dim, drop_prob, batch_first=True, norm_first=True)
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ClusterReadout(nn.Module):
    """Soft assignment of ROI tokens to K learned cluster centres (orthonormal at init), as in BNT's OCRead."""

    def __init__(self, d_model: int, n_clusters: int):
        super().__init__()
        centres = torch.empty(n_clusters, d_model)
        nn.init.orthogonal_(centres) if n_clusters <= d_model else nn.init.xavier_uniform_(centres)
        self.centres = nn.Parameter(centres)
        self.scale = d_model**-0.5

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        assign = torch.softmax(tokens @ self.centres.t() * self.scale, dim=-1)  # (B, R, K)
        return assign.transpose(1, 2) @ tokens  # (B, K, d)


class BrainNetTransformer(nn.Module):
    """Teacher after Brain Network Transformer (Kan et al., NeurIPS 2022): FC rows as ROI tokens, pre-norm
    multi-head self-attention, a readout over soft ROI clusters, an MLP classifier. biokd's implementation."""

    input_keys = ("fc",)

    def __init__(
        self,
        n_rois: int,
        n_outputs: int = 1,
        d_model: int = 256,
        n_heads: int = 4,
        depth: int = 2,
        ff_dim: int = 1024,
        n_clusters: int = 64,
        cluster_dim: int = 8,
        embed_dim: int = 256,
        hidden: int = 32,
        drop_prob: float = 0.1,
    ):
        super().__init__()
        self.config = constructor_kwargs(locals())
        self.n_rois, self.n_outputs = n_rois, n_outputs
        self.tokens = nn.Linear(n_rois, d_model)
        self.encoder = _Encoder(d_model, n_heads, depth, ff_dim, drop_prob)
        self.readout = ClusterReadout(d_model, n_clusters)
        self.embedding = nn.Sequential(
            nn.Linear(d_model, cluster_dim),
            nn.LeakyReLU(),
            nn.Flatten(),
            nn.Linear(n_clusters * cluster_dim, embed_dim),
            nn.LeakyReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(drop_prob), nn.Linear(embed_dim, hidden), nn.LeakyReLU(), nn.Linear(hidden, n_outputs)
        )

    @classmethod
    def spec_sizes(cls, spec: Any) -> dict[str, int]:
        """Sizes from the data spec: ROIs of ``fc`` and the output count."""
        n_rois, n_outputs = spec_sizes(spec)
        return {"n_rois": n_rois, "n_outputs": n_outputs}

    @classmethod
    def from_spec(cls, spec: Any, **kwargs: Any) -> BrainNetTransformer:
        n_rois, n_outputs = spec_sizes(spec)
        return cls(**{"n_rois": n_rois, "n_outputs": n_outputs, **kwargs})

    def layer_names(self) -> list[str]:
        return [f"encoder.layers.{i}" for i in range(len(self.encoder.layers))] + ["readout", "embedding"]

    def forward(self, fc: torch.Tensor) -> torch.Tensor:
        _check_fc(fc, self.n_rois, "BrainNetTransformer")
        tokens = self.encoder(self.tokens(fc))
        return self.classifier(self.embedding(self.readout(tokens)))


class EdgeToEdge(nn.Module):
    """BrainNetCNN's cross-shaped filter: a row and a column convolution summed at every edge (i, j)."""

    def __init__(self, in_channels: int, out_channels: int, n_rois: int):
        super().__init__()
        self.row = nn.Conv2d(in_channels, out_channels, (1, n_rois))
        self.col = nn.Conv2d(in_channels, out_channels, (n_rois, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.row(x) + self.col(x)  # (B, C, R, 1) + (B, C, 1, R) -> (B, C, R, R)


class NodeView(nn.Module):
    """(B, C, R, 1) edge-to-node maps as ROI node embeddings (B, R, C): a tap point for node-level terms."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(-1).transpose(1, 2)


class BrainNetCNN(nn.Module):
    """Small student after BrainNetCNN (Kawahara et al., NeuroImage 2017): edge-to-edge, edge-to-node and
    node-to-graph convolutions over the FC matrix, then a graph embedding and a linear classifier."""

    input_keys = ("fc",)

    def __init__(
        self,
        n_rois: int,
        n_outputs: int = 1,
        e2e_channels: int = 4,
        e2n_channels: int = 8,
        n2g_channels: int = 32,
        embed_dim: int = 32,
        drop_prob: float = 0.2,
    ):
        super().__init__()
        self.config = constructor_kwargs(locals())
        self.n_rois, self.n_outputs = n_rois, n_outputs
        self.e2e = nn.Sequential(EdgeToEdge(1, e2e_channels, n_rois), nn.LeakyReLU(0.33))
        self.e2n = nn.Sequential(nn.Conv2d(e2e_channels, e2n_channels, (1, n_rois)), nn.LeakyReLU(0.33))
        self.nodes = NodeView()
        self.n2g = nn.Sequential(nn.Conv2d(e2n_channels, n2g_channels, (n_rois, 1)), nn.LeakyReLU(0.33))
        self.embedding = nn.Sequential(
            nn.Flatten(), nn.Dropout(drop_prob), nn.Linear(n2g_channels, embed_dim), nn.LeakyReLU(0.33)
        )
        self.classifier = nn.Linear(embed_dim, n_outputs)

    @classmethod
    def spec_sizes(cls, spec: Any) -> dict[str, int]:
        """Sizes from the data spec: ROIs of ``fc`` and the output count."""
        n_rois, n_outputs = spec_sizes(spec)
        return {"n_rois": n_rois, "n_outputs": n_outputs}

    @classmethod
    def from_spec(cls, spec: Any, **kwargs: Any) -> BrainNetCNN:
        n_rois, n_outputs = spec_sizes(spec)
        return cls(**{"n_rois": n_rois, "n_outputs": n_outputs, **kwargs})

    def layer_names(self) -> list[str]:
        return ["e2e", "e2n", "nodes", "n2g", "embedding"]

    def forward(self, fc: torch.Tensor) -> torch.Tensor:
        _check_fc(fc, self.n_rois, "BrainNetCNN")
        nodes = self.nodes(self.e2n(self.e2e(fc.unsqueeze(1))))  # (B, R, C')
        x = self.n2g(nodes.transpose(1, 2).unsqueeze(-1))
        return self.classifier(self.embedding(x))
