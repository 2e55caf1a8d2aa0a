"""Read intermediate outputs of named submodules through forward hooks, without touching ``forward``."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch
from torch import nn


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path``; an unknown path fails at once, suggesting near names."""
    modules = dict(model.named_modules())
    if path in modules:
        return modules[path]
    close = difflib.get_close_matches(path, [n for n in modules if n], n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise KeyError(f"{type(model).__name__} has no submodule {path!r}.{hint}")


class Taps:
    """Forward hooks on ``paths`` of ``model``; after a forward pass ``outputs[path]`` holds each output.

    Outputs that are tuples (e.g. attention layers) keep their first element.
    """

    def __init__(self, model: nn.Module, paths: Iterable[str]):
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        for path in dict.fromkeys(paths):
            module = resolve_module(model, path)
            self._handles.append(module.register_forward_hook(self._hook(path)))

    def _hook(self, path: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            self.outputs[path] = output[0] if isinstance(output, tuple | list) else output  # type: ignore[assignment]

        return hook

    def pop(self) -> dict[str, torch.Tensor]:
        """Return the captured outputs and forget them (so no step sees another step's tensors)."""
        out, self.outputs = self.outputs, {}
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.outputs.clear()

    def __enter__(self) -> Taps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
