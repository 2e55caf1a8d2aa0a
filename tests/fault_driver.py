"""Runs one step of biokd in its own process so that tests/test_faults.py can kill it (-9) and rerun it.

``python tests/fault_driver.py preprocess OUT SRC JOBS DELAY`` builds a tiny store (six subjects, each
taking DELAY seconds); ``cache ROOT DELAY`` builds a teacher cache of a fixed random teacher over 96 items
(DELAY seconds per batch); ``distill DATA TEACHER OUT`` runs a seeded three-epoch distillation with the cache on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biokd.data.spec import DataSpec, InputSpec, TargetSpec
from biokd.data.store import SubjectItems, build_store

SPEC = DataSpec(
    "fault-eeg",
    [InputSpec("eeg", [4, 400], ["channel", "time"], unit="100 uV", sfreq=200.0)],
    TargetSpec("classification", classes=["left", "right"]),
    ["subject", "session"],
)
SPLIT = {"s1": "train", "s2": "train", "s3": "train", "s4": "val", "s5": "test", "s6": "test"}


def subject_items(subject: str, paths: Sequence[Path], protocol: Mapping[str, Any]) -> SubjectItems:
    """Eight windows per subject (class 1 carries a 10 Hz rhythm), after ``protocol['delay']`` seconds."""
    time.sleep(float(protocol.get("delay", 0.0)))
    rng = np.random.default_rng(int(subject[1:]))
    x = rng.normal(0, 1, (8, 4, 400)).astype(np.float32)
    labels = np.arange(8) % 2
    x[labels == 1, 0] += 2 * np.sin(2 * np.pi * 10 * np.arange(400) / 200.0).astype(np.float32)
    rows = [{"subject": subject, "session": "1", "label": int(v), "split": SPLIT[subject]} for v in labels]
    return SubjectItems({"eeg": x}, rows)


def preprocess(out: str, src: str, jobs: str, delay: str) -> None:
    sources = {}
    for s in SPLIT:
        if not (Path(src) / f"{s}.txt").is_file():  # rewritten files would be new sources (no reuse)
            (Path(src) / f"{s}.txt").write_text(s)
        sources[s] = [Path(src) / f"{s}.txt"]
    build_store(Path(out), sources, subject_items, {"delay": float(delay)}, SPEC, jobs=int(jobs))


class Items(torch.utils.data.Dataset):
    """96 seeded items with an ``index``."""

    def __init__(self) -> None:
        self.x = torch.randn(96, 8, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.x[i], "index": i}


def cache(root: str, delay: str) -> None:
    from biokd.distill.cache import build_cache

    torch.manual_seed(0)
    teacher = torch.nn.Linear(8, 5)

    def teacher_fn(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        time.sleep(float(delay))
        return {"output": teacher(batch["x"]), "view:feat": torch.tanh(teacher(batch["x"]))}

    build_cache(root, teacher_fn, Items(), {"teacher": "linear"}, batch_size=8, shard_size=16, progress=False)


DISTILL = """
data: {{root: {root}}}
teacher: {{run: {teacher}}}
student: {{name: mic, kwargs: {{d_model: 16, depth: 1}}}}
distill:
  terms:
    - {{name: task, kind: task}}
    - {{name: kd, kind: kd, temperature: 2.0}}
  baseline: false
train: {{epochs: 3, batch_size: 8, progress: false, seed: 3}}
n_boot: 20
"""


def distill(data: str, teacher: str, out: str) -> None:
    from biokd.config import load_config
    from biokd.pipeline import RunConfig
    from biokd.pipeline import distill as run

    path = Path(out).parent / f"{Path(out).name}.yaml"
    path.write_text(DISTILL.format(root=data, teacher=teacher))
    run(load_config(RunConfig, path), out)


if __name__ == "__main__":
    {"preprocess": preprocess, "cache": cache, "distill": distill}[sys.argv[1]](*sys.argv[2:])
