"""Names of the models biokd builds from configs, and how a model is saved beside its weights (``model.json``)."""

from __future__ import annotations

import difflib
import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from .errors import BiokdError, ConfigError, WeightsError
from .registry import MODELS


def constructor_kwargs(frame_locals: Mapping[str, Any]) -> dict[str, Any]:
    """A model's constructor arguments as JSON-able values: call with ``locals()`` first thing in ``__init__``.

    What ``model.json`` stores, so a checkpoint reloads without its run config and no argument is forgotten.
    """
    return {k: _plain(v) for k, v in frame_locals.items() if k not in ("self", "__class__")}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", None) == 0 else value


def model_class(name: str) -> type[nn.Module]:
    if name not in MODELS:
        close = difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown model {name!r}.{hint} Known models: {', '.join(MODELS)}")
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    try:
        return model_class(name)(**kwargs)
    except TypeError as err:
        raise ConfigError(f"model {name!r}: {err}") from None


def model_spec(model: nn.Module) -> dict[str, Any]:
    """What ``model.json`` holds: the class path and the constructor kwargs recorded in ``model.config``."""
    cls = type(model)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "kwargs": dict(getattr(model, "config", {}))}


def model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a model from a ``model.json`` spec (only classes of the biokd package are accepted)."""
    path = spec["class"]
    if not path.startswith("biokd."):
        raise ConfigError(f"model.json names {path!r}; only biokd models can be rebuilt")
    module, _, cls = path.rpartition(".")
    return getattr(importlib.import_module(module), cls)(**spec["kwargs"])


def load_run_model(run_dir: str | Path, spec: Mapping[str, Any] | None = None) -> nn.Module:
    """A run folder's model (``model.json``) with its best weights (``checkpoints/best.pt``), in eval mode."""
    from ._io import load_torch

    run_dir = Path(run_dir)
    if spec is None:
        spec_path = run_dir / "model.json"
        if not spec_path.is_file():
            raise BiokdError(f"{run_dir}: not a biokd run folder (no model.json)")
        spec = json.loads(spec_path.read_text())
    try:
        model = model_from_spec(dict(spec))
    except BiokdError:
        raise
    except (ImportError, AttributeError, TypeError, ValueError) as err:
        raise ConfigError(f"{run_dir / 'model.json'}: cannot rebuild {spec.get('class')!r}: {err}") from err
    ckpt = run_dir / "checkpoints" / "best.pt"
    state = load_torch(ckpt)
    key = next((k for k in ("student", "model") if isinstance(state, dict) and k in state), None)
    if key is None:
        found = sorted(state)[:10] if isinstance(state, dict) else type(state).__name__
        raise WeightsError(f"{ckpt}: no 'student' or 'model' entry holding the model's weights (found {found})")
    try:
        model.load_state_dict(state[key])
    except RuntimeError as err:
        raise WeightsError(f"{ckpt}: the '{key}' weights do not fit {spec['class']}: {err}") from err
    return model.eval()
