"""Read a preprocessed shard folder (see :mod:`biokd.data.store`) as a torch ``Dataset`` of batches."""

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


class WindowsDataset(Dataset):
    """Windows of one split, memory-mapped from the subject shards.

    Each item is a dict: the signal under ``protocol["signal_key"]`` (``"eeg"`` for EEG) as float32
    ``(n_channels, n_times)``, ``label`` (int), ``subject``, ``session`` (str) and ``index`` (the row of
    the window in ``manifest.csv``, a stable key for teacher-output caches).
    """

    def __init__(self, root: str | Path, split: str | Sequence[str] | None = None, scale: float | None = None):
        self.root = Path(root)
        for name in ("manifest.csv", "protocol.json"):
            if not (self.root / name).is_file():
                raise DataError(self.root / name, "missing: run `biokd preprocess ...` to create this folder")
        self.protocol: dict[str, Any] = json.loads((self.root / "protocol.json").read_text())
        manifest = pd.read_csv(self.root / "manifest.csv", dtype={"subject": str, "session": str})
        manifest["index"] = np.arange(len(manifest))
        if split is not None:
            wanted = [split] if isinstance(split, str) else list(split)
            manifest = manifest[manifest["split"].isin(wanted)]
        self.manifest = manifest.reset_index(drop=True)
        self.signal_key = self.protocol.get("signal_key", "eeg")
        self.scale = float(self.protocol.get("scale", 1.0) if scale is None else scale)
        self._shards: dict[str, np.ndarray] = {}
        self._shard = self.manifest["shard"].to_numpy()
        self._row = self.manifest["row"].to_numpy()
        self._label = self.manifest["label"].to_numpy()

    def __len__(self) -> int:
        return len(self.manifest)

    def _array(self, shard: str) -> np.ndarray:
        if shard not in self._shards:
            self._shards[shard] = np.load(self.root / shard, mmap_mode="r")
        return self._shards[shard]

    def __getitem__(self, i: int) -> dict[str, Any]:
        x = np.array(self._array(self._shard[i])[self._row[i]], dtype=np.float32)
        if self.scale != 1.0:
            x *= self.scale
        row = self.manifest.iloc[i]
        return {
            self.signal_key: torch.from_numpy(x),
            "label": int(self._label[i]),
            "subject": str(row["subject"]),
            "session": str(row["session"]),
            "index": int(row["index"]),
        }

    @property
    def subjects(self) -> list[str]:
        return sorted(self.manifest["subject"].unique().tolist())

    @property
    def labels(self) -> np.ndarray:
        return self._label

    @property
    def n_classes(self) -> int:
        return len(self.protocol["class_names"])

    @property
    def class_names(self) -> list[str]:
        return list(self.protocol["class_names"])

    @property
    def sfreq(self) -> float:
        return float(self.protocol["sfreq"])

    @property
    def ch_names(self) -> list[str]:
        return list(self.protocol["ch_names"])

    def input_shape(self) -> tuple[int, int]:
        """(n_channels, n_times) of one window."""
        return tuple(self._array(self._shard[0]).shape[1:])  # type: ignore[return-value]
