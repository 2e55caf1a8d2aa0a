"""Make torchvision importable beside a CPU-only torch (stack.md, breakage 2).

The torchvision wheel on the registries here is a CUDA build; its Python side registers kernels for the
``torchvision::nms`` and ``torchvision::qnms`` operators, whose schemas live in the compiled library that a
CPU torch cannot load, so ``import torchvision`` (hence timm, open_clip, transformers, peft) fails with
"operator torchvision::nms does not exist". Defining the two schemas first lets everything else import;
only torchvision's own C++ ops stay unavailable (biokd uses none). Written here because no library does it.
"""

from __future__ import annotations

import sys

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_LIBRARY = None  # kept alive: the schemas disappear when the Library object is garbage-collected


def ensure_torchvision_importable() -> bool:
    """Define the missing schemas when torch has no CUDA and torchvision is not imported yet; True if it did."""
    global _LIBRARY
    import torch

    if torch.version.cuda is not None or "torchvision" in sys.modules or _LIBRARY is not None:
        return False
    missing = [op for op in ("nms", "qnms") if not torch._C._jit_get_schemas_for_operator(f"torchvision::{op}")]
    if not missing:
        return False
    _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
    for op in missing:
        _LIBRARY.define(f"{op}{_SCHEMA}")
    return True
