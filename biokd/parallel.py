"""Several processes, one run: PyTorch's own distributed runtime as set up by ``torchrun``.

``torchrun --nproc-per-node N -m biokd distill CONFIG ...`` starts N processes whose environment names their
rank (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``). The process group is made
lazily on first use (NCCL on CUDA, gloo on CPU); only rank 0 writes files; collective helpers do nothing in a
single process, so the same code runs under ``python -m biokd`` and under ``torchrun``.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def world_size() -> int:
    """Processes of this run (1 outside ``torchrun``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process writes (checkpoints, history, reports, run folders): rank 0 only."""
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def init() -> bool:
    """Join the process group named by the environment (once); False in a single process."""
    if not is_distributed():
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and os.environ.get("BIOKD_DIST_BACKEND", "") != "gloo"
        if cuda:
            torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(shutdown)
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if init():
        dist.barrier()


def main_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0, then on the other ranks once rank 0 is done (e.g. build a cache, then reuse it)."""
    if not is_distributed():
        return fn()
    result = fn() if is_main() else None
    barrier()
    return result if is_main() else fn()  # type: ignore[return-value]


def mean_across(values: dict[str, float], weight: float) -> dict[str, float]:
    """Weighted means of ``values`` over ranks (each rank's ``values`` are means over ``weight`` items)."""
    if not init() or not values:
        return values
    keys = sorted(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    t = torch.tensor([values[k] * weight for k in keys] + [weight], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(t[i] / t[-1]) for i, k in enumerate(keys)}


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not init():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def main_write_json(path: Any, obj: Any) -> None:
    """:func:`biokd._io.write_json` on rank 0 only (the other ranks of a torchrun write nothing)."""
    from ._io import write_json

    if is_main():
        write_json(path, obj)
