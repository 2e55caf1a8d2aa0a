"""Teacher-output cache: run the frozen teacher once over the training set, then read it memory-mapped.

Layout of a cache folder::

    meta.json              key (hash of teacher weights, data protocol, data files, term views), shapes
    index.npy              the manifest ``index`` of each cached item, in cache order
    shard-00000/<name>.npy float16 arrays, ``shard_size`` items each (written to a temporary folder, then
    shard-00000/done.json  renamed; ``done.json`` is written last, so a shard cut short is never used)

A cache whose key differs from the current run's (another teacher, protocol, data or term set) is stale: it is
reported and rebuilt, never used. An interrupted build resumes from its finished shards.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .._io import sha256_json, write_json, write_npy
from ..batch import to_device
from ..errors import DataError

FORMAT_VERSION = 1


def hash_state_dict(module: torch.nn.Module) -> str:
    """Content hash of a module's weights (names, shapes and bytes)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def data_fingerprint(root: str | Path) -> dict[str, Any]:
    """Identity of a preprocessed folder: its protocol hash and the size and mtime of every shard."""
    root = Path(root)
    protocol = json.loads((root / "protocol.json").read_text())
    shards = sorted((root / "shards").glob("*.npy"))
    return {
        "protocol": protocol.get("hash", sha256_json(protocol)),
        "files": [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in shards],
    }


class TeacherCache:
    """Read side of a finished cache: ``lookup(index)`` gives the teacher's outputs for those items."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.meta = json.loads((self.root / "meta.json").read_text())
        index = np.load(self.root / "index.npy")
        self._order = np.argsort(index, kind="stable")
        self._sorted = index[self._order]
        self.shard_size = int(self.meta["shard_size"])
        self.names = list(self.meta["shapes"])
        self._arrays: dict[str, list[np.ndarray]] = {
            name: [
                np.load(self.root / f"shard-{s:05d}" / f"{_fname(name)}.npy", mmap_mode="r")
                for s in range(self.meta["n_shards"])
            ]
            for name in self.names
        }

    def __len__(self) -> int:
        return len(self._sorted)

    def positions(self, index: np.ndarray) -> np.ndarray:
        where = np.searchsorted(self._sorted, index)
        ok = (where < len(self._sorted)) & (self._sorted[np.minimum(where, len(self._sorted) - 1)] == index)
        if not ok.all():
            raise DataError(self.root, f"items {index[~ok][:5].tolist()} are not in this cache")
        return self._order[where]

    def lookup(self, index: torch.Tensor | np.ndarray, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        pos = self.positions(np.asarray(torch.as_tensor(index).cpu()))
        shard, row = np.divmod(pos, self.shard_size)
        out = {}
        for name in self.names:
            arrays = self._arrays[name]
            values = np.stack([arrays[s][r] for s, r in zip(shard.tolist(), row.tolist(), strict=True)])
            out[name] = torch.from_numpy(values.astype(np.float32)).to(device)
        return out

    @property
    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*.npy"))


def _fname(name: str) -> str:
    return name.replace(":", "__").replace("/", "_")


def build_cache(
    root: str | Path,
    teacher_fn: Callable[[dict[str, Any]], Mapping[str, torch.Tensor]],
    dataset: Dataset,
    key: Mapping[str, Any],
    *,
    batch_size: int = 64,
    shard_size: int = 1024,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
    max_shards: int | None = None,
    progress: bool = True,
) -> TeacherCache:
    """Build (or reuse, or resume) the cache of ``teacher_fn`` over ``dataset`` in ``root``.

    ``teacher_fn(batch)`` returns named tensors (e.g. :meth:`Distiller.teacher_targets`); items must carry
    an ``index``. ``key`` identifies everything the outputs depend on. ``max_shards`` stops early (tests).
    """
    from ..data.store import folder_lock

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # Two runs sharing a cache folder: the second waits for nothing and gets one clear error (not FileExistsError).
    with folder_lock(root, "another teacher-cache build"):
        return _build(root, teacher_fn, dataset, key, batch_size, shard_size, device, log, max_shards, progress)


def _build(
    root: Path,
    teacher_fn: Callable[[dict[str, Any]], Mapping[str, torch.Tensor]],
    dataset: Dataset,
    key: Mapping[str, Any],
    batch_size: int,
    shard_size: int,
    device: torch.device | str,
    log: Callable[[str], None],
    max_shards: int | None,
    progress: bool,
) -> TeacherCache:
    """:func:`build_cache` under the folder's lock."""
    full_key = {"format": FORMAT_VERSION, "n": len(dataset), "shard_size": shard_size, **key}
    key_hash = sha256_json(full_key)
    meta_path = root / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key_hash") != key_hash:
            changed = [k for k in full_key if meta.get("key", {}).get(k) != full_key[k]]
            log(f"teacher cache {root} is stale (changed: {', '.join(changed) or 'format'}); rebuilding it")
            for old in root.iterdir():  # everything but the lock this build holds
                if old.name != ".lock":
                    shutil.rmtree(old) if old.is_dir() else old.unlink()
        elif meta.get("complete"):
            log(f"teacher cache {root} is valid; reusing it ({_size(TeacherCache(root).nbytes)})")
            return TeacherCache(root)
    for leftover in root.glob(".tmp-shard-*"):
        log(f"teacher cache: removing {leftover.name}, a shard cut short by an interrupted build")
        shutil.rmtree(leftover)

    n_shards = -(-len(dataset) // shard_size)
    first = teacher_fn(to_device(next(iter(DataLoader(Subset(dataset, [0]), batch_size=1))), device))
    shapes = {name: list(t.shape[1:]) for name, t in first.items()}
    per_item = sum(2 * int(np.prod(s)) for s in shapes.values())
    log(
        f"teacher cache: {len(dataset)} items × {per_item / 1024:.1f} KiB = {_size(per_item * len(dataset))} "
        f"on disk (float16) in {root}"
    )
    meta = {
        "key_hash": key_hash,
        "key": full_key,
        "shapes": shapes,
        "shard_size": shard_size,
        "n_shards": n_shards,
        "complete": False,
    }
    write_json(meta_path, meta)

    index_parts = []
    built = 0
    bar = _Bar(progress, -(-len(dataset) // batch_size), f"teacher cache ({device})")
    for s in range(n_shards):
        items = list(range(s * shard_size, min(len(dataset), (s + 1) * shard_size)))
        final = root / f"shard-{s:05d}"
        if (final / "done.json").is_file():
            index_parts.append(np.load(final / "index.npy"))
            continue
        if max_shards is not None and built >= max_shards:
            raise InterruptedError(f"stopped after {built} shards")
        tmp = root / f".tmp-shard-{s:05d}"
        tmp.mkdir()
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in shapes}
        idx = []
        for batch in DataLoader(Subset(dataset, items), batch_size=batch_size, shuffle=False):
            with torch.no_grad():
                out = teacher_fn(to_device(batch, device))
            for name in shapes:
                chunks[name].append(out[name].detach().cpu().to(torch.float16).numpy())
            idx.append(np.asarray(batch["index"]))
            bar.advance()
        for name, parts in chunks.items():
            write_npy(tmp / f"{_fname(name)}.npy", np.concatenate(parts))
        write_npy(tmp / "index.npy", np.concatenate(idx))
        write_json(tmp / "done.json", {"items": len(items)})
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        index_parts.append(np.concatenate(idx))
        built += 1
    bar.close()
    write_npy(root / "index.npy", np.concatenate(index_parts))
    write_json(meta_path, {**meta, "complete": True})
    cache = TeacherCache(root)
    log(f"teacher cache: built {built} of {n_shards} shards ({_size(cache.nbytes)})")
    return cache


class _Bar:
    """A transient rich progress bar on a terminal; nothing when ``enabled`` is false or stderr is a log."""

    def __init__(self, enabled: bool, total: int, description: str):
        import os

        self.progress = None
        if enabled and os.isatty(2):
            from rich.progress import Progress

            self.progress = Progress(transient=True)
            self.task = self.progress.add_task(description, total=total)
            self.progress.start()

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
