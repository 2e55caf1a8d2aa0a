"""model.json is untrusted: only registered models are rebuilt, with plain JSON kwargs; nothing else runs."""

from __future__ import annotations

import json

import pytest

from biokd._io import save_torch
from biokd.errors import ConfigError
from biokd.glucose.gluconet import GlucoNet
from biokd.models import load_run_model, model_from_spec, model_spec

SMALL = dict(n_times=6, n_outputs=2, conv_channels=4, lstm_hidden=4, d_model=8, n_heads=2, dim_feedforward=16,
             head_hidden=4, drop_prob=0.0, vmd_iter=1)  # fmt: skip


def _run(tmp_path, spec):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "model.json").write_text(json.dumps(spec))
    save_torch(run / "checkpoints" / "best.pt", {"student": GlucoNet(**SMALL).state_dict()})
    return run


def test_model_json_naming_a_package_function_writes_nothing(tmp_path):
    target = tmp_path / "planted.pth"
    spec = {"class": "biokd._io.write_text", "kwargs": {"path": str(target), "text": "import os"}}
    with pytest.raises(ConfigError, match="not a registered model class"):
        load_run_model(_run(tmp_path, spec))
    assert not target.exists()


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"name": "write_text", "kwargs": {}}, "not registered"),
        ({"name": "gluconet", "class": "biokd._io.write_text", "kwargs": {}}, "does not match"),
        ({"class": "biokd.glucose.gluconet.GlucoNet", "kwargs": {"n_times": {"__class__": 1j}}}, "plain JSON"),
        ({"class": "biokd.glucose.gluconet.GlucoNet", "kwargs": ["n_times"]}, "mapping"),
        ({"class": "biokd.glucose.gluconet.GlucoNet", "kwargs": {"no_such_arg": 1}}, "cannot build"),
        (["biokd.glucose.gluconet.GlucoNet"], "expected a mapping"),
    ],
)
def test_bad_specs_are_refused(spec, match):
    with pytest.raises(ConfigError, match=match):
        model_from_spec(spec)


def test_registered_name_and_old_class_path_both_rebuild(tmp_path):
    spec = model_spec(GlucoNet(**SMALL))
    assert spec["name"] == "gluconet" and spec["class"] == "biokd.glucose.gluconet.GlucoNet"
    assert isinstance(load_run_model(_run(tmp_path, spec)), GlucoNet)
    old = {"class": spec["class"], "kwargs": spec["kwargs"]}  # a run folder written before names were recorded
    rebuilt = model_from_spec(old)
    assert isinstance(rebuilt, GlucoNet) and rebuilt.config == spec["kwargs"]


def test_damaged_model_json_names_the_file(tmp_path):
    run = _run(tmp_path, {})
    (run / "model.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"model\.json: not valid JSON"):
        load_run_model(run)
