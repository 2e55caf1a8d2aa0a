"""An export and its card are published as a pair: a kill at any point never leaves a card beside a file it
does not describe, and read_card checks the pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import biokd.export.card as card_module
from biokd.export import ExportError
from biokd.export.run import export_model, read_card

pytest.importorskip("onnxruntime", reason="export extra not installed (pip install 'biokd[export]')")


class Tiny(nn.Module):
    input_keys = ("x",)

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def _export(out, seed):
    return export_model(Tiny(seed), {"x": np.zeros(4, np.float32)}, "onnx", out, measure=False)


def test_kill_between_model_and_card_leaves_no_wrong_card(tmp_path, monkeypatch):
    out = tmp_path / "student.onnx"
    first = _export(out, 0)
    assert read_card(out)["file"]["sha256"] == first.card["file"]["sha256"]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for a kill after the model was renamed into place

    monkeypatch.setattr(card_module, "write_card", killed)
    with pytest.raises(KeyboardInterrupt):
        _export(out, 1)
    assert out.read_bytes() != b""  # the new model is in place ...
    assert not out.with_name("student.onnx.card.json").exists()  # ... and the old card is not beside it
    with pytest.raises(ExportError, match=r"card\.json: missing"):
        read_card(out)


def test_kill_while_the_card_is_made_leaves_the_old_pair(tmp_path, monkeypatch):
    out = tmp_path / "student.onnx"
    _export(out, 0)
    before = out.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(card_module, "build_card", killed)
    with pytest.raises(KeyboardInterrupt):
        _export(out, 1)
    assert out.read_bytes() == before
    read_card(out)  # still a matching pair


def test_read_card_refuses_a_card_of_another_file(tmp_path):
    out = tmp_path / "student.onnx"
    _export(out, 0)
    out.write_bytes(out.read_bytes() + b"\0")
    with pytest.raises(ExportError, match="does not describe"):
        read_card(out)
