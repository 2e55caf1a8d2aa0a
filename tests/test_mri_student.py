"""MRI-only student: MONAI ResNet, named embedding tap, data-spec sizes, ONNX export with parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biokd.errors import ConfigError
from biokd.models import model_from_spec, model_spec
from biokd.mri.biomedclip import RELEASED_PARAMETERS
from biokd.mri.oasis3 import data_spec
from biokd.mri.student import MriResNet
from biokd.profiling import count_flops, count_parameters


def test_from_spec_forward_and_tap():
    torch.manual_seed(0)
    student = MriResNet.from_spec(data_spec({"spatial_size": [24, 24, 24]}), embed_dim=16)
    assert student.input_keys == ("mri",)
    assert student.config["n_outputs"] == 1 and student.config["in_channels"] == 1
    taps = {}
    student.embedding.register_forward_hook(lambda m, i, o: taps.__setitem__("embedding", o))
    out = student.eval()(torch.rand(3, 1, 24, 24, 24))
    assert out.shape == (3, 1) and taps["embedding"].shape == (3, 16)
    rebuilt = model_from_spec(model_spec(student))
    rebuilt.load_state_dict(student.state_dict())
    x = torch.rand(2, 1, 24, 24, 24)
    torch.testing.assert_close(rebuilt.eval()(x), student(x))


def test_classification_spec_and_bad_input():
    inputs = [{"name": "mri", "shape": [1, 8, 8, 8]}]
    spec = {"inputs": inputs, "target": {"kind": "classification", "classes": list("abc")}}
    assert MriResNet.from_spec(spec).config["n_outputs"] == 3
    with pytest.raises(ConfigError, match="forecasting"):
        MriResNet.from_spec({"inputs": inputs, "target": {"kind": "forecasting"}})
    with pytest.raises(ValueError, match=r"expects mri \(B, 1, D, H, W\); got \(2, 3, 8, 8, 8\)"):
        MriResNet()(torch.rand(2, 3, 8, 8, 8))


def test_size_and_cost_at_the_default_volume():
    student = MriResNet()
    params = count_parameters(student)
    assert params * 100 < RELEASED_PARAMETERS  # hundreds of times fewer parameters than BiomedCLIP
    flops = count_flops(student, (torch.rand(1, 1, 48, 56, 48),))
    # the stem alone: 5³ kernel, 1 → 8 channels, stride 2 → 24·28·24 voxels, 2 FLOPs per multiply-accumulate
    assert flops > 2 * 125 * 8 * 24 * 28 * 24


def test_onnx_export_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from biokd.export.onnx import OnnxPredictor, export_onnx

    torch.manual_seed(0)
    student = MriResNet(widths=(4, 8, 8, 16), embed_dim=8).eval()
    x = torch.rand(3, 1, 16, 16, 16)
    path = export_onnx(student, (x[:1],), tmp_path / "student.onnx", input_names=["mri"])
    np.testing.assert_allclose(OnnxPredictor(path)(x.numpy()), student(x).detach().numpy(), atol=1e-4)
