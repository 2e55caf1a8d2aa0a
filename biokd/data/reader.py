"""Read a store folder (see :mod:`biokd.data.store`) as a torch ``Dataset`` of items, for every dataset.

An item is a dict: every named array of the shard (inputs, and array targets such as forecasts) as a float
tensor, the target under the spec's key (``label`` from the manifest for classification), the metadata
columns of the spec as strings, and ``index`` (the row of the item in ``manifest.csv``, the teacher-cache key).
Every shard is checked against ``protocol.json`` before anything is read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .spec import DataSpec, spec_of
from .store import SAFE_NAME
from .transforms import Compose, scale_from_protocol


def read_protocol(root: Path) -> dict[str, Any]:
    for name in ("manifest.csv", "protocol.json"):
        if not (root / name).is_file():
            raise DataError(
                root / name, "missing: this is not a preprocessed folder (create it with `biokd preprocess ...`)"
            )
    try:
        return json.loads((root / "protocol.json").read_text())
    except ValueError as err:
        raise DataError(root / "protocol.json", f"not valid JSON ({err})") from None


class ShardDataset(Dataset):
    """Items of one or more splits, memory-mapped from the subject shards of a store folder."""

    def __init__(
        self,
        root: str | Path,
        split: str | Sequence[str] | None = None,
        transforms: Compose | None = None,
        *,
        subjects: Sequence[str] | None = None,
    ):
        self.root = Path(root)
        self.protocol = read_protocol(self.root)
        self.spec: DataSpec = spec_of(self.protocol, str(self.root / "protocol.json"))
        try:
            manifest = pd.read_csv(self.root / "manifest.csv", dtype={"subject": str, "session": str, "site": str})
        except (ValueError, pd.errors.ParserError) as err:
            raise DataError(self.root / "manifest.csv", f"not a readable manifest ({err})") from None
        needed = {"subject", "split", "shard", "row"} | ({self.spec.target.key} - self._array_keys_guess())
        if missing := sorted(needed - set(manifest.columns)):
            raise DataError(self.root / "manifest.csv", f"columns {missing} are missing")
        manifest["index"] = np.arange(len(manifest))
        if split is not None:
            wanted = [split] if isinstance(split, str) else list(split)
            manifest = manifest[manifest["split"].isin(wanted)]
        if subjects is not None:
            manifest = manifest[manifest["subject"].isin([str(s) for s in subjects])]
        self.manifest = manifest.reset_index(drop=True)
        self._arrays_of: dict[str, list[str]] = self._verify_shards()
        self.array_keys = sorted({k for keys in self._arrays_of.values() for k in keys})
        self.transforms = Compose([*scale_from_protocol(self.protocol, self.spec.input_names), *(transforms or [])])
        self._mmaps: dict[tuple[str, str], np.ndarray] = {}
        self._shard = self.manifest["shard"].to_numpy()
        self._row = self.manifest["row"].to_numpy()
        self._meta = {c: self.manifest[c].astype(str).to_numpy() for c in self.spec.metadata if c in self.manifest}
        self._index = self.manifest["index"].to_numpy()
        key = self.spec.target.key
        self._label = self.manifest[key].to_numpy() if key in self.manifest and key not in self.array_keys else None

    def _array_keys_guess(self) -> set[str]:
        return {"target"} if self.spec.target.kind == "forecasting" else set()

    def _verify_shards(self) -> dict[str, list[str]]:
        """Each shard: a confined path and a sidecar of this protocol (no mix of two builds is ever read)."""
        found: dict[str, list[str]] = {}
        for shard in self.manifest["shard"].unique():
            name = str(shard).removeprefix("shards/")
            if not str(shard).startswith("shards/") or not SAFE_NAME.match(name) or ".." in name:
                raise DataError(self.root / "manifest.csv", f"shard path {shard!r} is outside the shards/ folder")
            side = self.root / "shards" / f"{name}.json"
            try:
                meta = json.loads(side.read_text())
            except (OSError, ValueError):
                raise DataError(side, "missing or unreadable shard sidecar: preprocess again") from None
            if meta.get("protocol_hash") != self.protocol.get("hash"):
                raise DataError(
                    side, "this shard was built with another protocol than protocol.json (an interrupted rebuild "
                    "or two builds into one folder): preprocess again into this folder"
                )  # fmt: skip
            arrays = [str(k) for k in meta.get("arrays", [])]
            if bad := [k for k in arrays if not SAFE_NAME.match(k)]:
                raise DataError(side, f"unsafe array names {bad}")
            rows = self.manifest.loc[self.manifest["shard"] == shard, "row"]
            n_items = meta.get("n_items")
            if not isinstance(n_items, int) or (len(rows) and not (rows.min() >= 0 and rows.max() < n_items)):
                raise DataError(
                    self.root / "manifest.csv", f"rows of {shard} fall outside its {n_items} items: preprocess again"
                )
            found[str(shard)] = arrays
        return found

    def __len__(self) -> int:
        return len(self.manifest)

    def array(self, shard: str, key: str) -> np.ndarray:
        if (shard, key) not in self._mmaps:
            path = self.root / f"{shard}.{key}.npy"
            try:
                self._mmaps[(shard, key)] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as err:
                raise DataError(path, f"unreadable shard array ({err})") from None
        return self._mmaps[(shard, key)]

    def __getitem__(self, i: int) -> dict[str, Any]:
        shard, row = self._shard[i], self._row[i]
        item: dict[str, Any] = {}
        for key in self._arrays_of[shard]:
            item[key] = torch.from_numpy(np.array(self.array(shard, key)[row], dtype=np.float32))
        if self._label is not None:
            item[self.spec.target.key] = int(self._label[i])
        if self.spec.target.kind == "forecasting" and "target" in item:
            item["target_mask"] = torch.isfinite(item["target"]).float()
        for col, values in self._meta.items():
            item[col] = values[i]
        item["index"] = int(self._index[i])
        return self.transforms(item) if len(self.transforms) else item

    # -- views of the data ---------------------------------------------------------------------------------
    @property
    def subjects(self) -> list[str]:
        return sorted(self.manifest["subject"].unique().tolist())

    @property
    def subject_per_item(self) -> list[str]:
        return self.manifest["subject"].astype(str).tolist()

    @property
    def labels(self) -> np.ndarray:
        if self._label is None:
            raise DataError(self.root / "manifest.csv", f"no {self.spec.target.key!r} column (a forecasting dataset)")
        return self._label

    @property
    def class_names(self) -> list[str]:
        return list(self.spec.target.classes)

    @property
    def n_classes(self) -> int:
        return len(self.spec.target.classes)

    @property
    def sfreq(self) -> float | None:
        return self.spec.inputs[0].sfreq

    @property
    def ch_names(self) -> list[str]:
        return list(self.spec.inputs[0].labels.get("channel", []))

    def input_shape(self, name: str | None = None) -> tuple[int, ...]:
        """Shape of one item's input ``name`` (default: the first input), without the batch axis."""
        return tuple(self.spec.input(name or self.spec.input_names[0]).shape)

    def targets(self) -> np.ndarray:
        """All targets of this dataset, in order: labels ``(n,)`` or forecasts ``(n, H)``."""
        if self._label is not None:
            return self._label
        key = self.spec.target.key
        out = np.zeros((len(self), self.spec.target.n_outputs), np.float32)
        for shard, rows in self.manifest.groupby("shard", sort=False):
            out[rows.index.to_numpy()] = self.array(shard, key)[rows["row"].to_numpy()]
        return out


#: The name round 1 used for the reader.
WindowsDataset = ShardDataset
