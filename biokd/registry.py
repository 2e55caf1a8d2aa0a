"""The registries: names a config or a run folder may use, each mapped to a ``module:attribute`` string.

Adding a model, a dataset or a metrics extension is one line here. Names read from files are looked up in
these tables only; nothing else from a file is ever imported. The core imports no modality: entries are
strings, resolved when used.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from .errors import ConfigError

#: Model name → class. Every entry is built, run, reloaded and exported by tests/test_registry.py.
MODELS: dict[str, str] = {
    "cbramod": "biokd.eeg.cbramod:CBraModTeacher",
    "mic": "biokd.eeg.mic:MiC",
    "glucose_transformer": "biokd.glucose.transformer:GlucoseTransformer",
    "gluconet": "biokd.glucose.gluconet:GlucoNet",
    "brainnet_transformer": "biokd.fmri.models:BrainNetTransformer",
    "brainnetcnn": "biokd.fmri.models:BrainNetCNN",
    "biomedclip": "biokd.mri.biomedclip:BiomedClipTeacher",
    "mri_resnet": "biokd.mri.student:MriResNet",
}

#: Dataset name (``protocol.json``'s ``dataset``) → its protocol class (with ``spec()``), for the registry tests.
DATASETS: dict[str, str] = {
    "physionet-mi": "biokd.eeg.physionet_mi:PhysionetMIProtocol",
    "faced": "biokd.eeg.faced:FacedProtocol",
    "ohiot1dm": "biokd.glucose.ohiot1dm:OhioProtocol",
    "abide": "biokd.fmri.abide:AbideProtocol",
    "oasis3": "biokd.mri.oasis3:Oasis3Protocol",
}

#: Group-fitted stage kind → its :class:`biokd.data.stages.GroupStage` class (fitted on training subjects only).
STAGES: dict[str, str] = {
    "standardize": "biokd.data.stages:Standardize",
    "tangent": "biokd.fmri.connectivity:TangentStage",
    "combat": "biokd.fmri.connectivity:CombatStage",
}

#: Metrics extension name (a target spec's ``metrics``) → ``fn(targets, outputs, subjects, target_spec) -> dict``.
METRICS: dict[str, str] = {
    "glucose": "biokd.glucose.clinical:clinical_forecast_metrics",
}

#: Metrics extension name → a class whose instances add figures to an export's model card.
EXPORT_METRICS: dict[str, str] = {
    "glucose": "biokd.glucose.metrics:ExportCardMetrics",
}

#: Demo name (``biokd demo NAME``) → ``fn(out, quick, seed) -> report path``.
DEMOS: dict[str, str] = {
    "eeg": "biokd.eeg.demo:cli_demo",
    "glucose": "biokd.glucose.demo:cli_demo",
    "fmri": "biokd.fmri.demo:cli_demo",
    "mri": "biokd.mri.demo:cli_demo",
}

#: Modality packages whose ``commands.register(preprocess_app, simulate_app)`` adds their CLI commands.
MODALITIES: tuple[str, ...] = ("biokd.eeg", "biokd.glucose", "biokd.fmri", "biokd.mri")


def resolve(table: dict[str, str], name: str, what: str) -> Any:
    """The object registered as ``name`` in ``table``; an unknown name lists the known ones."""
    if not isinstance(name, str) or name not in table:
        close = difflib.get_close_matches(str(name), list(table), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown {what} {name!r}.{hint} Known: {', '.join(table)}")
    module, _, attr = table[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def metrics_extension(name: str) -> Any:
    return resolve(METRICS, name, "metrics extension")
