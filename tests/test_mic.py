"""MiC student (size, cost, shapes, export) and the profiling helpers it is measured with."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from biokd.eeg.cbramod import CBraModTeacher
from biokd.eeg.mic import MiC
from biokd.errors import BiokdError, ConfigError
from biokd.profiling import count_flops, count_parameters, cpu_latency_ms, model_summary

FACED = (32, 2000, 9)
PHYSIONET_MI = (64, 800, 4)


def test_default_size_at_faced_scale():
    student = MiC(*FACED)
    assert abs(count_parameters(student) - 1_250_000) <= 0.05 * 1_250_000
    assert count_parameters(student, trainable_only=True) == count_parameters(student)
    assert json.loads(json.dumps(student.config))["d_model"] == 64


def test_flops_at_least_50x_below_the_teacher():
    flops = {}
    for scale in (FACED, PHYSIONET_MI):
        flops[scale, "student"] = count_flops(MiC(*scale), torch.zeros(1, *scale[:2]))
        for head in ("linear", "all_patch_reps"):
            # The teacher's forward runs on shape-only (meta) tensors: same operations, no arithmetic, and the
            # FACED all_patch_reps head (128 M parameters) is never allocated.
            with torch.device("meta"):
                teacher = CBraModTeacher(*scale, head=head)
            flops[scale, head] = count_flops(teacher, torch.empty(1, *scale[:2], device="meta"))
    assert flops[FACED, "linear"] > 3.0e9  # 12 criss-cross layers over 320 tokens, attention included
    for scale in (FACED, PHYSIONET_MI):
        for head in ("linear", "all_patch_reps"):
            assert flops[scale, head] / flops[scale, "student"] >= 50, (scale, head)


@pytest.mark.parametrize("scale", [FACED, PHYSIONET_MI])
def test_shapes_and_taps(scale):
    n_chans, n_times, n_outputs = scale
    student = MiC(*scale)
    assert student.layer_names() == ["encoder.0", "encoder.1", "mimic"]
    seen = {}
    for name in student.layer_names():
        student.get_submodule(name).register_forward_hook(lambda m, i, o, n=name: seen.__setitem__(n, o.shape))
    logits = student(torch.randn(3, n_chans, n_times))
    assert logits.shape == (3, n_outputs)
    assert set(seen.values()) == {(3, n_chans, n_times // 200, 64)}


def test_every_parameter_gets_a_gradient():
    student = MiC(8, 600, 4)
    F.cross_entropy(student(torch.randn(4, 8, 600)), torch.tensor([0, 1, 2, 3])).backward()
    silent = [n for n, p in student.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []


def test_torch_export_with_dynamic_batch():
    torch.manual_seed(0)
    student = MiC(*FACED).eval()
    batch = torch.export.Dim("batch", min=1, max=512)
    program = torch.export.export(student, (torch.randn(2, 32, 2000),), dynamic_shapes=({0: batch},))
    for size in (1, 5):
        x = torch.randn(size, 32, 2000)
        with torch.no_grad():
            assert torch.allclose(program.module()(x), student(x), atol=1e-5)


def test_input_and_config_checks():
    student = MiC(*FACED)
    with pytest.raises(BiokdError) as err:
        student(torch.zeros(2, 64, 800))
    assert str(err.value) == "MiC student expects (B, 32, 2000) at 200 Hz; got (B, 64, 800)"
    with pytest.raises(ConfigError, match="not a positive multiple of patch_size=200"):
        MiC(32, 2100, 9)
    with pytest.raises(ConfigError, match="n_heads=3 must be even"):
        MiC(32, 2000, 9, n_heads=3)
    rebuilt = MiC(**json.loads(json.dumps(student.config)))
    assert count_parameters(rebuilt) == count_parameters(student)


# ---------------------------------------------------------------------------------------------------------
# biokd.profiling


class _SDPA(nn.Module):
    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, q, q)


@pytest.mark.parametrize("length", [16, 32, 64])
def test_attention_flops_are_counted_and_quadratic_in_length(length):
    batch, dim, heads = 2, 32, 4
    # F.scaled_dot_product_attention alone: Q·Kᵀ and A·V, 2·B·H·L²·(D/H) each.
    sdpa = count_flops(_SDPA(), torch.randn(batch, heads, length, dim // heads))
    assert sdpa == 4 * batch * length**2 * dim

    # nn.MultiheadAttention (fast path in eval mode): projections 8·B·L·D² plus attention 4·B·L²·D.
    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    fastpath = torch.backends.mha.get_fastpath_enabled()
    flops = count_flops(SelfAttention(), torch.randn(batch, length, dim))
    assert flops == 8 * batch * length * dim**2 + 4 * batch * length**2 * dim
    assert torch.backends.mha.get_fastpath_enabled() == fastpath


def test_parameter_counts_latency_and_summary():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 2))
    model[0].weight.requires_grad_(False)
    assert count_parameters(model) == 10 * 20 + 20 + 20 * 2 + 2
    assert count_parameters(model, trainable_only=True) == 20 + 20 * 2 + 2
    threads = torch.get_num_threads()
    latency = cpu_latency_ms(model, torch.randn(1, 10), threads=1, warmup=1, repeats=5)
    assert 0 < latency["p50"] <= latency["p95"] and torch.get_num_threads() == threads
    summary = model_summary(model.train(), torch.randn(4, 10), repeats=3)
    assert summary["flops"] == 2 * 4 * (10 * 20 + 20 * 2) and summary["input_shapes"] == [[4, 10]]
    assert model.training  # restored
