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
    """What ``model.json`` holds: the registered name, the class path and the constructor kwargs (``model.config``)."""
    cls = type(model)
    path = f"{cls.__module__}.{cls.__qualname__}"
    spec: dict[str, Any] = {"class": path, "kwargs": dict(getattr(model, "config", {}))}
    name = next((n for n, entry in MODELS.items() if entry.replace(":", ".") == path), None)
    return {"name": name, **spec} if name is not None else spec


def model_from_spec(spec: Mapping[str, Any], where: str = "model.json") -> nn.Module:
    """Rebuild a model from a ``model.json`` spec: untrusted input, so only registered models with plain kwargs.

    The model is named by its registered name (``name``) or, for run folders written before names were recorded,
    by the class path of a registered entry (``class``); nothing else is imported or called.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping with 'name' or 'class' and 'kwargs', got {type(spec).__name__}")
    name = _registered_name(spec, where)
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise ConfigError(f"{where}: 'kwargs' must be a mapping of argument names to values")
    for key, value in kwargs.items():
        if not _is_plain_json(value):
            raise ConfigError(f"{where}: kwargs[{key!r}] is not a plain JSON value ({type(value).__name__})")
    cls = model_class(name)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"{where}: registered model {name!r} is not a torch module")
    try:
        return cls(**dict(kwargs))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: cannot build model {name!r} from its kwargs: {err}") from None


def _registered_name(spec: Mapping[str, Any], where: str) -> str:
    """The MODELS name a spec refers to (by ``name``, else by a registered ``class`` path)."""
    name, path = spec.get("name"), spec.get("class")
    if name is not None:
        if not isinstance(name, str) or name not in MODELS:
            raise ConfigError(f"{where}: model name {name!r} is not registered; known models: {', '.join(MODELS)}")
        if path is not None and path != MODELS[name].replace(":", "."):
            raise ConfigError(f"{where}: 'class' {path!r} does not match registered model {name!r}")
        return name
    by_path = {entry.replace(":", "."): n for n, entry in MODELS.items()}
    if not isinstance(path, str) or path not in by_path:
        raise ConfigError(
            f"{where}: names {path!r}, which is not a registered model class; only registered models are rebuilt "
            f"({', '.join(MODELS)})"
        )
    return by_path[path]


def _is_plain_json(value: Any, depth: int = 0) -> bool:
    """None, bool, int, float, str, or lists / string-keyed mappings of those (nested at most 8 deep)."""
    if depth > 8:
        return False
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain_json(v, depth + 1) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain_json(v, depth + 1) for k, v in value.items())
    return False


def load_run_model(run_dir: str | Path, spec: Mapping[str, Any] | None = None) -> nn.Module:
    """A run folder's model (``model.json``) with its best weights (``checkpoints/best.pt``), in eval mode."""
    from ._io import load_torch

    run_dir = Path(run_dir)
    if spec is None:
        spec_path = run_dir / "model.json"
        if not spec_path.is_file():
            raise BiokdError(f"{run_dir}: not a biokd run folder (no model.json)")
        try:
            spec = json.loads(spec_path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ConfigError(f"{spec_path}: not valid JSON ({err})") from None
    model = model_from_spec(spec, where=str(run_dir / "model.json"))
    ckpt = run_dir / "checkpoints" / "best.pt"
    state = load_torch(ckpt)
    key = next((k for k in ("student", "model") if isinstance(state, dict) and k in state), None)
    if key is None:
        found = sorted(state)[:10] if isinstance(state, dict) else type(state).__name__
        raise WeightsError(f"{ckpt}: no 'student' or 'model' entry holding the model's weights (found {found})")
    try:
        model.load_state_dict(state[key])
    except RuntimeError as err:
        raise WeightsError(f"{ckpt}: the '{key}' weights do not fit {type(model).__name__}: {err}") from err
    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:  # a diverged run's checkpoint scores as noise; refuse it rather than report it
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise WeightsError(f"{ckpt}: weights hold NaN or infinite values ({', '.join(bad[:3])}{more})")
    return model.eval()
