"""Fault tests (issue 14): a biokd process killed with SIGKILL at several points of preprocessing, the
teacher-cache build and a distillation, then run again, ends exactly like a run that was never interrupted
(bit for bit: shards and manifest, cache arrays, best.pt weights). Preprocess workers stop with their parent.

Each step runs in its own process (tests/fault_driver.py) and is killed when a file it writes appears, i.e.
at a known stage, wherever inside that stage it happens to be.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

DRIVER = Path(__file__).with_name("fault_driver.py")
ROOT = Path(__file__).resolve().parents[1]


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, str(DRIVER), *args], env=env, stderr=subprocess.PIPE, text=True)


def _run(*args: str) -> None:
    proc = _start(*args)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]


def _kill_when(proc: subprocess.Popen, ready, sig: int = signal.SIGKILL, timeout: float = 120) -> None:
    """Send ``sig`` to ``proc`` as soon as ``ready()`` is true (it must become true before the process ends)."""
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the step ended before the kill point: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < end, "kill point never reached"
        time.sleep(0.01)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    proc.stderr.close()


def _files(folder: Path, pattern: str = "*") -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob(pattern)) if p.is_file()}


def _store(folder: Path) -> dict[str, object]:
    """The store's content: shards, manifest, protocol and sidecars (less the source paths and times)."""
    import json

    out: dict[str, object] = {}
    for name, data in _files(folder).items():
        if name.endswith(".json") and name.startswith("shards/"):
            out[name] = {k: v for k, v in json.loads(data).items() if k != "sources"}
        elif name != "report.json" and not name.startswith("."):
            out[name] = data
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("reference")
    (base / "src").mkdir()
    _run("preprocess", str(base / "data"), str(base / "src"), "1", "0.2")
    return base


@pytest.mark.parametrize("after", [1, 3, 5])
def test_preprocess_killed_then_rerun_equals_an_uninterrupted_build(reference: Path, tmp_path: Path, after: int):
    (tmp_path / "src").mkdir()
    proc = _start("preprocess", str(tmp_path / "data"), str(tmp_path / "src"), "1", "0.2")
    _kill_when(proc, lambda: len(list((tmp_path / "data" / "shards").glob("*.json"))) >= after)
    assert not (tmp_path / "data" / "manifest.csv").exists()  # killed before the build was published
    _run("preprocess", str(tmp_path / "data"), str(tmp_path / "src"), "1", "0.2")
    assert _store(tmp_path / "data") == _store(reference / "data")
    report = json.loads((tmp_path / "data" / "report.json").read_text())
    assert len(report["reused"]) >= after and len(report["reused"]) + len(report["processed"]) == 6
    assert not list((tmp_path / "data").rglob(".*.tmp")) and not (tmp_path / "data" / ".lock").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_preprocess_workers_stop_with_their_parent(tmp_path: Path, sig: int) -> None:
    import psutil

    (tmp_path / "src").mkdir()
    proc = _start("preprocess", str(tmp_path / "data"), str(tmp_path / "src"), "2", "3")
    parent = psutil.Process(proc.pid)
    workers: list[psutil.Process] = []

    def two_workers_busy() -> bool:
        workers[:] = [c for c in parent.children(recursive=True) if "resource_tracker" not in " ".join(c.cmdline())]
        return len(workers) >= 2 and (tmp_path / "data" / "shards").is_dir()

    _kill_when(proc, two_workers_busy, sig)
    _, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive, f"workers outlived their parent: {[p.pid for p in alive]}"
    time.sleep(3.5)  # longer than one subject: a surviving worker would have written its shard by now
    assert not list((tmp_path / "data" / "shards").glob("*.npy"))


def _cache_arrays(root: Path) -> dict[str, np.ndarray]:
    return {k: np.load(root / k) for k in _files(root, "*.npy")}


@pytest.mark.parametrize("after", [1, 4])
def test_cache_build_killed_then_rerun_equals_an_uninterrupted_build(tmp_path: Path, after: int) -> None:
    _run("cache", str(tmp_path / "ref"), "0")
    proc = _start("cache", str(tmp_path / "c"), "0.1")
    _kill_when(proc, lambda: len(list((tmp_path / "c").glob("shard-*"))) >= after)
    _run("cache", str(tmp_path / "c"), "0")
    ref, got = _cache_arrays(tmp_path / "ref"), _cache_arrays(tmp_path / "c")
    assert sorted(got) == sorted(ref) and len(ref) == 6 * 3 + 1  # 6 shards × (output, feat, index) + index
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    assert not list((tmp_path / "c").glob(".tmp-shard-*")) and not (tmp_path / "c" / ".lock").exists()


@pytest.fixture(scope="module")
def teacher_run(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from biokd.config import load_config
    from biokd.pipeline import RunConfig, train_teacher

    tmp = tmp_path_factory.mktemp("teacher")
    (tmp / "c.yaml").write_text(
        f"data: {{root: {reference / 'data'}}}\nteacher: {{name: cbramod, kwargs: {{n_layer: 1, head: avgpool}}}}\n"
        "train: {epochs: 1, batch_size: 8, progress: false}\nn_boot: 20\n"
    )
    train_teacher(load_config(RunConfig, tmp / "c.yaml"), tmp / "run")
    return tmp / "run"


@pytest.mark.slow
@pytest.mark.parametrize("point", ["cache", "epoch"])
def test_distillation_killed_then_rerun_ends_with_the_same_weights(
    reference: Path, teacher_run: Path, tmp_path: Path, point: str
) -> None:
    data = str(reference / "data")
    _run("distill", data, str(teacher_run), str(tmp_path / "ref"))
    out = tmp_path / "run"
    proc = _start("distill", data, str(teacher_run), str(out))
    if point == "cache":  # while the teacher cache is being built (its meta.json is written before the shards)
        _kill_when(proc, lambda: (out / "teacher_cache" / "meta.json").is_file())
    else:  # after the first epoch's checkpoint
        _kill_when(proc, lambda: (out / "checkpoints" / "last.pt").is_file())
    assert not (out / "metrics.json").exists()
    _run("distill", data, str(teacher_run), str(out))
    ref = torch.load(tmp_path / "ref" / "checkpoints" / "best.pt", weights_only=True)
    got = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert got["epoch"] == ref["epoch"] and got["student"].keys() == ref["student"].keys()
    for key, value in ref["student"].items():
        assert torch.equal(got["student"][key], value), key
    for name, array in _cache_arrays(tmp_path / "ref" / "teacher_cache").items():
        np.testing.assert_array_equal(np.load(out / "teacher_cache" / name), array, err_msg=name)


def test_two_runs_sharing_a_cache_folder_get_a_clear_error(tmp_path: Path) -> None:
    """A build into a cache folder another live process is building is one DataError, not FileExistsError."""
    import socket

    from biokd.distill.cache import build_cache
    from biokd.errors import DataError

    sys.path.insert(0, str(DRIVER.parent))
    from fault_driver import Items

    teacher = torch.nn.Linear(8, 5)

    def teacher_fn(batch):
        return {"output": teacher(batch["x"])}

    (tmp_path / "c").mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "c" / ".lock").write_text(f"{socket.gethostname()} {other.pid}")
        with pytest.raises(DataError, match=r"another teacher-cache build is already writing here"):
            build_cache(tmp_path / "c", teacher_fn, Items(), {"t": 1}, log=lambda m: None, progress=False)
        assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [".lock"]  # nothing of the other's touched
    finally:
        other.kill()
        other.wait()
    # Once that process is gone its lock is stale: the next build takes it over, builds, and releases it.
    cache = build_cache(tmp_path / "c", teacher_fn, Items(), {"t": 1}, log=lambda m: None, progress=False)
    assert len(cache) == 96 and not (tmp_path / "c" / ".lock").exists()
