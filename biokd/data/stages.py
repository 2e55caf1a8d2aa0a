"""Group-fitted stages: a transform whose parameters are fitted on the training subjects only (a
standardisation, a tangent-space reference, a site harmonisation), saved beside the shards with what it
was fitted on, and applied to every split by the reader.

Layout: ``stages/<kind>-<key>.npz`` (the fitted arrays, no pickle) and ``stages/<kind>-<key>.json``
(kind, parameters, the subjects it was fitted on, the protocol hash). ``key`` hashes all of these, so a
stage fitted on other subjects (another fold) is another file and a test subject can never move it.
Stage kinds are names of :data:`biokd.registry.STAGES`, never import paths from a file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .._io import atomic_path, sha256_json, write_json
from ..errors import ConfigError, DataError


@dataclass
class StageConfig:
    """A stage in a run config: ``kind`` (a name of :data:`biokd.registry.STAGES`) and its parameters."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)


class GroupStage:
    """Base class: ``fit`` on training items, then ``__call__`` transforms any item with the fitted state."""

    kind: ClassVar[str] = ""
    random: ClassVar[bool] = False

    def __init__(self, **params: Any):
        self.params = params
        self.state: dict[str, np.ndarray] = {}

    def fit(self, items: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class Standardize(GroupStage):
    """Per-element z-scoring of input ``key`` with the training items' mean and standard deviation."""

    kind = "standardize"

    def fit(self, items):
        key = self.params.get("key")
        if not key:
            raise ConfigError("stage standardize needs params.key (the input to standardise)")
        stacked = np.stack([np.asarray(item[key], np.float64) for item in items])
        return {"mean": stacked.mean(0), "std": np.maximum(stacked.std(0), 1e-8)}

    def __call__(self, item):
        key = self.params["key"]
        mean = torch.as_tensor(self.state["mean"], dtype=torch.float32)
        std = torch.as_tensor(self.state["std"], dtype=torch.float32)
        item[key] = (item[key] - mean) / std
        return item


def stage_class(kind: str) -> type[GroupStage]:
    from ..registry import STAGES, resolve

    cls = resolve(STAGES, kind, "stage")
    if not (isinstance(cls, type) and issubclass(cls, GroupStage)):
        raise ConfigError(f"stage {kind!r} is not a group stage")
    return cls


def fit_stage(root: str | Path, config: StageConfig, dataset: Any) -> GroupStage:
    """Fit ``config`` on ``dataset`` (the training split, read without stages) or reuse the same fit."""
    root = Path(root)
    cls = stage_class(config.kind)
    subjects = sorted(dataset.subjects)
    protocol_hash = dataset.protocol.get("hash")
    record = {"kind": config.kind, "params": config.params, "fitted_on": subjects, "protocol_hash": protocol_hash}
    key = sha256_json(record)[:16]
    stem = root / "stages" / f"{config.kind}-{key}"
    stage = cls(**config.params)
    if stem.with_suffix(".json").is_file() and stem.with_suffix(".npz").is_file():
        stage.state = _load_npz(stem.with_suffix(".npz"))
        return stage
    stage.state = stage.fit(dataset[i] for i in range(len(dataset)))
    with atomic_path(stem.with_suffix(".npz")) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **stage.state)
    write_json(stem.with_suffix(".json"), {**record, "n_items": len(dataset), "arrays": sorted(stage.state)})
    return stage


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise DataError(path, f"unreadable stage state ({err}); delete it to refit") from None


def stage_records(root: str | Path) -> list[dict[str, Any]]:
    """What each stage in a store folder was fitted on (for reports)."""
    return [json.loads(p.read_text()) for p in sorted((Path(root) / "stages").glob("*.json"))]


def fit_stages(root: str | Path, configs: Sequence[StageConfig], split: str | Sequence[str]) -> list[GroupStage]:
    """Fit stages in order on the items of ``split`` (the training split), each after the ones before it."""
    from .reader import ShardDataset
    from .transforms import Compose

    fitted: list[GroupStage] = []
    for config in configs:
        fitted.append(fit_stage(root, config, ShardDataset(root, split, Compose(list(fitted)))))
    return fitted
