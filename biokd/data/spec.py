"""The data spec: what one item of a preprocessed dataset holds, written by every preprocessor into
``protocol.json`` (key ``spec``) and read by the store, the reader, the tasks and the models.

An item is a dict of named inputs (each with its shape, axis names, dtype, unit and, where one applies, the
sampling rate of its time axis), a target (classes, a binary outcome or forecast horizons) and metadata
columns (always ``subject``; ``site`` where the dataset has sites). Models take their sizes from the spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError

TargetKind = Literal["classification", "binary", "forecasting"]


@dataclass
class InputSpec:
    """One named input of an item, e.g. ``eeg`` ``(n_chans, n_times)`` or ``fc`` ``(n_rois, n_rois)``."""

    name: str
    shape: list[int]
    axes: list[str]
    dtype: str = "float32"
    unit: str = ""
    #: Sampling rate (Hz) of the axis named ``time``, where one applies.
    sfreq: float | None = None
    #: Names along an axis, e.g. ``{"channel": [...]}`` or ``{"roi": [...]}``.
    labels: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.shape) != len(self.axes):
            raise ConfigError(f"input {self.name!r}: shape {self.shape} has {len(self.shape)} axes, names {self.axes}")
        for axis, names in self.labels.items():
            if axis not in self.axes:
                raise ConfigError(f"input {self.name!r}: labels for unknown axis {axis!r} (axes {self.axes})")
            if len(names) != self.shape[self.axes.index(axis)]:
                raise ConfigError(
                    f"input {self.name!r}: {len(names)} {axis} labels for size {self.shape[self.axes.index(axis)]}"
                )

    def size(self, axis: str) -> int:
        if axis not in self.axes:
            raise ConfigError(f"input {self.name!r} has no axis {axis!r} (axes {self.axes})")
        return self.shape[self.axes.index(axis)]


@dataclass
class TargetSpec:
    """What is predicted: classes (with names), a binary outcome (with its positive class) or forecasts."""

    kind: TargetKind
    #: Batch key: ``label`` (int64) for classification and binary, ``target`` (float32 ``(H,)``) for forecasts.
    key: str = "label"
    classes: list[str] = field(default_factory=list)
    positive: str | None = None
    horizons: list[float] = field(default_factory=list)
    #: Unit of the horizons (e.g. ``min``) and of the forecast values (e.g. ``mg/dL``).
    horizon_unit: str = ""
    unit: str = ""
    #: A registered metrics extension (see :data:`biokd.registry.METRICS`) the report adds, e.g. ``glucose``.
    metrics: str | None = None

    def __post_init__(self) -> None:
        if self.kind in ("classification", "binary") and len(self.classes) < 2:
            raise ConfigError(f"{self.kind} target needs at least two class names; got {self.classes}")
        if self.kind == "binary":
            if len(self.classes) != 2:
                raise ConfigError(f"binary target needs exactly two classes; got {self.classes}")
            if self.positive is None:
                self.positive = self.classes[1]
            if self.positive != self.classes[1]:
                raise ConfigError(f"binary target: the positive class must be label 1 ({self.classes[1]!r})")
        if self.kind == "forecasting" and not self.horizons:
            raise ConfigError("forecasting target needs its horizons")

    @property
    def n_outputs(self) -> int:
        return {"classification": len(self.classes), "binary": 1, "forecasting": len(self.horizons)}[self.kind]


@dataclass
class DataSpec:
    dataset: str
    inputs: list[InputSpec]
    target: TargetSpec
    metadata: list[str] = field(default_factory=lambda: ["subject"])

    def __post_init__(self) -> None:
        if "subject" not in self.metadata:
            raise ConfigError(f"dataset {self.dataset!r}: metadata must include 'subject'")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names) or not names:
            raise ConfigError(f"dataset {self.dataset!r}: input names must be unique and non-empty; got {names}")

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise ConfigError(f"dataset {self.dataset!r} has no input {name!r}; it has {[i.name for i in self.inputs]}")

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    def to_dict(self) -> dict[str, Any]:
        from ..config import to_dict

        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "spec") -> DataSpec:
        from ..config import from_dict

        return from_dict(cls, dict(data), where)


def spec_of(protocol: Mapping[str, Any], where: str = "protocol.json") -> DataSpec:
    """The :class:`DataSpec` of a ``protocol.json`` (its ``spec`` entry)."""
    if "spec" not in protocol:
        raise ConfigError(f"{where}: no data spec (written by biokd >= 0.2); preprocess the dataset again")
    return DataSpec.from_dict(protocol["spec"], f"{where}: spec")
