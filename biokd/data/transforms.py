"""Keyed transforms the reader applies to each item (MONAI's dictionary style, without MONAI's import cost).

A transform is a callable ``item -> item`` on the dict of named tensors; :class:`Compose` chains them. Random
transforms (augmentations) set ``random = True``: a dataset read through one cannot use a teacher cache.
Transforms are named in configs through :data:`TRANSFORMS`, never by an import path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError

Item = dict[str, Any]


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Any] = ()):
        self.transforms = list(transforms)

    def __call__(self, item: Item) -> Item:
        for t in self.transforms:
            item = t(item)
        return item

    @property
    def random(self) -> bool:
        return any(getattr(t, "random", False) for t in self.transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def __iter__(self):
        return iter(self.transforms)


@dataclass
class Scale:
    """Multiply ``keys`` by ``factor`` (e.g. volts to the unit a model expects)."""

    keys: list[str]
    factor: float = 1.0
    random = False

    def __call__(self, item: Item) -> Item:
        for k in self.keys:
            item[k] = item[k] * self.factor
        return item


@dataclass
class GaussianNoise:
    """Add zero-mean Gaussian noise of ``std`` (input units) to ``keys`` (an augmentation; torch's RNG)."""

    keys: list[str]
    std: float = 0.0
    random = True

    def __call__(self, item: Item) -> Item:
        for k in self.keys:
            item[k] = item[k] + self.std * torch.randn_like(item[k])
        return item


@dataclass
class TransformConfig:
    """One transform in a config: ``kind`` (a name of :data:`TRANSFORMS`), the keys and its parameters."""

    kind: str
    keys: list[str] = field(default_factory=list)
    params: dict[str, float] = field(default_factory=dict)


TRANSFORMS: dict[str, type] = {"scale": Scale, "noise": GaussianNoise}


def build_transforms(configs: Sequence[TransformConfig], inputs: Sequence[str]) -> Compose:
    """Transforms from configs, checked against the dataset's input names (keys default to every input)."""
    out = []
    for i, cfg in enumerate(configs):
        if cfg.kind not in TRANSFORMS:
            raise ConfigError(f"transforms[{i}]: unknown kind {cfg.kind!r}; known: {', '.join(TRANSFORMS)}")
        keys = cfg.keys or list(inputs)
        if missing := [k for k in keys if k not in inputs]:
            raise ConfigError(f"transforms[{i}] ({cfg.kind}): no input {missing} in the data (inputs {list(inputs)})")
        try:
            out.append(TRANSFORMS[cfg.kind](keys=keys, **cfg.params))
        except TypeError as err:
            raise ConfigError(f"transforms[{i}] ({cfg.kind}): {err}") from None
    return Compose(out)


def scale_from_protocol(protocol: Mapping[str, Any], inputs: Sequence[str]) -> list[Scale]:
    """The unit scaling a protocol asks for (``scale``: one factor for the first input, or ``{input: factor}``)."""
    scale = protocol.get("scale")
    if scale is None or scale == 1.0:
        return []
    if isinstance(scale, Mapping):
        return [Scale([k], float(v)) for k, v in scale.items() if float(v) != 1.0]
    return [Scale([inputs[0]], float(scale))]
