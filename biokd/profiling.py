"""Model size and cost: parameters, FLOPs per forward pass, single-thread CPU latency.

FLOPs follow the "2 × multiply-accumulates" convention throughout: a ``(m, k) @ (k, n)`` product counts
``2·m·k·n``. Counted: matrix products (``mm``/``addmm``/``bmm``, so every ``nn.Linear``), convolutions and
attention scores/weighted sums (scaled dot-product attention, including ``nn.MultiheadAttention`` and the CPU
fused kernel that torch's own counter leaves out). Not counted: element-wise work (activations, norms,
softmax, additions) and FFTs, which are small beside the products in the models biokd builds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

Inputs = torch.Tensor | Sequence[torch.Tensor]


def _as_tuple(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    return (inputs,) if torch.is_tensor(inputs) else tuple(inputs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor once); only those with ``requires_grad`` if asked."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch's FlopCounterMode has no formula for the fused CPU attention kernel, so on CPU attention counted 0.
_EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}


def count_flops(model: nn.Module, inputs: Inputs) -> int:
    """FLOPs (2 × multiply-accumulates) of one inference forward pass on ``inputs`` (the whole batch).

    The model runs in eval mode without gradients. ``nn.MultiheadAttention``'s fused fast path (one opaque
    kernel that no counter sees into) is switched off while counting, so its projections and attention are
    counted like any other; the previous setting and the model's train/eval mode are restored afterwards.
    """
    args = _as_tuple(inputs)
    was_training = model.training
    fastpath = torch.backends.mha.get_fastpath_enabled()
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), counter:
            model(*args)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
    return int(counter.get_total_flops())


def cpu_latency_ms(
    model: nn.Module, inputs: Inputs, threads: int = 1, warmup: int = 5, repeats: int = 30
) -> dict[str, float]:
    """Median and 95th-percentile wall time (ms) of one eval-mode forward pass on CPU with ``threads`` threads."""
    if repeats < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, threads >= 1; got {repeats}, {warmup}, {threads}")
    args = tuple(t.cpu() for t in _as_tuple(inputs))
    was_training = model.training
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.eval()
    times: list[float] = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(*args)
            for _ in range(repeats):
                start = time.perf_counter()
                model(*args)
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return {"p50": statistics.median(times), "p95": p95}


def model_summary(
    model: nn.Module, example_inputs: Inputs, latency: bool = True, threads: int = 1, repeats: int = 30
) -> dict[str, Any]:
    """Parameters, FLOPs per forward pass and (optionally) CPU latency of ``model`` on ``example_inputs``."""
    args = _as_tuple(example_inputs)
    summary: dict[str, Any] = {
        "model": type(model).__name__,
        "input_shapes": [list(t.shape) for t in args],
        "parameters": count_parameters(model),
        "trainable_parameters": count_parameters(model, trainable_only=True),
        "flops": count_flops(model, args),
        "flops_convention": "2 x multiply-accumulates",
    }
    if latency:
        summary["cpu_latency_ms"] = cpu_latency_ms(model, args, threads=threads, repeats=repeats)
        summary["cpu_threads"] = threads
    return summary
