"""Reading weights files that a user hands us: one place for the formats every model's loader shares.

``.safetensors`` through the safetensors library (no code by design), anything else through
``torch.load(weights_only=True)``; a folder holding ``model.safetensors`` or ``pytorch_model.bin`` (the
Hugging Face layout) is read through its file. A model's own format (key names, prefixes, heads) is its
``load_pretrained`` method's business; this module only turns a path into a state dict, or a clear error.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ._io import load_torch
from .errors import WeightsError

FOLDER_FILES = ("pytorch_model.bin", "model.safetensors")


def weights_file(path: str | Path, help_text: str = "") -> Path:
    """The file to read for ``path`` (a file, or a folder in the Hugging Face layout)."""
    path = Path(path)
    if path.is_dir():
        for name in FOLDER_FILES:
            if (path / name).is_file():
                return path / name
        found = sorted(p.name for p in path.iterdir())[:20]
        raise WeightsError(f"{path}: folder holds neither {' nor '.join(FOLDER_FILES)} (found: {found}). {help_text}")
    if not path.is_file():
        raise WeightsError(f"{path}: no such file. {help_text}".strip())
    return path


def read_safetensors(file: str | Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file's tensors; a damaged file is a :class:`WeightsError` naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise WeightsError(f"{file}: not a readable safetensors file ({err})") from None


def read_state_dict(path: str | Path, help_text: str = "") -> tuple[Path, object]:
    """``(file, content)`` of a weights file or folder: safetensors or a weights-only torch checkpoint."""
    file = weights_file(path, help_text)
    return file, read_safetensors(file) if file.suffix == ".safetensors" else load_torch(file)
