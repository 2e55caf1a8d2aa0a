"""Names of the models biokd builds from configs, and how a model is saved beside its weights (``model.json``)."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from torch import nn

from .errors import ConfigError

#: Config name → "module:Class". Adding a model is one line here plus its module.
MODELS: dict[str, str] = {
    "cbramod": "biokd.teachers.cbramod:CBraModTeacher",
    "mic": "biokd.students.mic:MiC",
    "glucose_transformer": "biokd.teachers.glucose_transformer:GlucoseTransformer",
    "gluconet": "biokd.students.gluconet:GlucoNet",
}


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
