"""The batch contract: a batch is a dict of named tensors plus metadata; models declare the keys they read.

Signal keys: ``eeg`` (float32, ``(B, n_chans, n_times)``), glucose inputs (see :mod:`biokd.glucose.ohiot1dm`),
``mri``/``pet`` for volumes. Targets: ``label`` (int64, ``(B,)``) for classification, ``target`` (float32,
``(B, n_horizons)``) for regression. Metadata: ``subject``, ``session``, ``site`` (lists of str) and ``index``
(int64, the window's row in its manifest; the key of teacher-output caches).

A model (teacher or student) is an ``nn.Module`` whose ``input_keys`` attribute names, in order, the batch
keys passed positionally to its ``forward``; so a teacher can read inputs the student never sees, and a
student's ``forward`` takes plain tensors and exports as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

METADATA_KEYS = ("subject", "session", "site", "index")


def input_keys(model: nn.Module) -> tuple[str, ...]:
    keys = getattr(model, "input_keys", None)
    if not keys:
        raise TypeError(f"{type(model).__name__} declares no input_keys: set e.g. input_keys = ('eeg',)")
    return tuple(keys)


def model_inputs(model: nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
    """The tensors ``model`` reads from ``batch``, in the order of its ``input_keys``."""
    keys = input_keys(model)
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(
            f"{type(model).__name__} reads {list(keys)} but the batch has no {missing}; batch keys: {sorted(batch)}"
        )
    return tuple(batch[k] for k in keys)


def to_device(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Move the tensors of a batch to ``device``; metadata lists stay as they are."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
