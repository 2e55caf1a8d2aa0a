"""Connectivity teacher and student: shapes, taps, parameter ratio, spec, config round trip, torch.export."""

from __future__ import annotations

import pytest
import torch

from biokd.fmri.models import BrainNetCNN, BrainNetTransformer
from biokd.models import model_from_spec, model_spec
from biokd.profiling import count_parameters

SPEC = {"inputs": [{"name": "fc", "shape": [200, 200]}], "target": {"kind": "binary", "classes": ["control", "autism"]}}


@pytest.mark.parametrize("n_outputs", [1, 2])
def test_forward_shapes_and_taps(n_outputs: int) -> None:
    torch.manual_seed(0)
    fc = torch.randn(3, 116, 116)
    teacher, student = BrainNetTransformer(116, n_outputs), BrainNetCNN(116, n_outputs)
    seen: dict[str, tuple[int, ...]] = {}
    modules = {**{f"t.{k}": m for k, m in teacher.named_modules()}, **{f"s.{k}": m for k, m in student.named_modules()}}
    for name in [f"t.{n}" for n in teacher.layer_names()] + [f"s.{n}" for n in student.layer_names()]:
        modules[name].register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape)))
    assert teacher.eval()(fc).shape == (3, n_outputs)
    assert student.eval()(fc).shape == (3, n_outputs)
    assert seen["t.encoder.layers.1"] == (3, 116, 256)
    assert seen["t.readout"] == (3, 64, 256)
    assert seen["t.embedding"] == (3, 256)
    assert seen["s.e2e"] == (3, 4, 116, 116) and seen["s.e2n"] == (3, 8, 116, 1) and seen["s.embedding"] == (3, 32)
    with pytest.raises(ValueError, match=r"\(B, 116, 116\)"):
        student(torch.randn(2, 100, 100))


def test_from_spec_parameter_ratio_and_config() -> None:
    teacher, student = BrainNetTransformer.from_spec(SPEC), BrainNetCNN.from_spec(SPEC)
    assert teacher.n_rois == student.n_rois == 200 and teacher.n_outputs == student.n_outputs == 1
    assert BrainNetCNN.from_spec(SPEC, n_outputs=2).n_outputs == 2
    ratio = count_parameters(student) / count_parameters(teacher)
    assert 0.01 < ratio < 0.05, ratio
    rebuilt = model_from_spec(model_spec(student))
    assert isinstance(rebuilt, BrainNetCNN) and rebuilt.config == student.config
    assert count_parameters(model_from_spec(model_spec(teacher))) == count_parameters(teacher)
    with pytest.raises(ValueError, match="no 'fc' input"):
        BrainNetCNN.from_spec({"inputs": [{"name": "eeg", "shape": [2, 3]}], "target": {}})


def test_student_exports_with_dynamic_batch() -> None:
    torch.manual_seed(1)
    student = BrainNetCNN(116).eval()
    fc = torch.randn(2, 116, 116)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(student, (fc,), dynamic_shapes=({0: batch},))
    other = torch.randn(5, 116, 116)
    torch.testing.assert_close(program.module()(other), student(other))
