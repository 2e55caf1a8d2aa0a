"""The atomic writers: files get the permissions the umask asks for, like any other program's."""

from __future__ import annotations

import os

import numpy as np
import pytest

from biokd._io import save_torch, write_json, write_npy, write_text


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths = [
            write_text(tmp_path / "a.txt", "x"),
            write_json(tmp_path / "b.json", {"a": 1}),
            write_npy(tmp_path / "c.npy", np.zeros(3)),
            save_torch(tmp_path / "d.pt", {"w": 1}),
        ]
    finally:
        os.umask(old)
    assert [oct(p.stat().st_mode & 0o777) for p in paths] == [oct(mode)] * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json", "c.npy", "d.pt"]  # no temporaries left


def test_atomic_dir_leaves_nothing_half_written(tmp_path):
    from biokd._io import atomic_dir

    target = tmp_path / "release"
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as tmp:  # a run killed while generating
        (tmp / "S001R04.edf").write_bytes(b"part")
        raise KeyboardInterrupt
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:  # the re-run starts afresh and publishes the whole folder at once
        (tmp / "S001R04.edf").write_bytes(b"whole")
    assert [p.name for p in target.iterdir()] == ["S001R04.edf"] and list(tmp_path.iterdir()) == [target]
