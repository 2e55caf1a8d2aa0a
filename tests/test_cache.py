"""Teacher-output cache: agreement with the live teacher, staleness, interrupted builds."""

from __future__ import annotations

import pytest
import torch
from test_distill_core import TASK, TinyNet, ToyEEG, _distill_terms

from biokd.distill.cache import build_cache, hash_state_dict
from biokd.distill.distiller import Distiller


@pytest.fixture
def distiller():
    torch.manual_seed(0)
    d = Distiller(TinyNet(6, n_layers=1), TinyNet(16), _distill_terms(), TASK)
    d.setup({"eeg": torch.randn(2, 4, 32), "label": torch.tensor([0, 1])})
    return d


def _key(d):
    return {"teacher": hash_state_dict(d.teacher), "views": [t.name for t in d.terms]}


def test_cached_outputs_agree_with_live_teacher(tmp_path, distiller):
    data = ToyEEG(50, 0)
    logs = []
    cache = build_cache(
        tmp_path / "c", distiller.teacher_targets, data, _key(distiller), batch_size=8, shard_size=16, log=logs.append
    )
    assert any("on disk (float16)" in m for m in logs)  # size announced before the build
    assert len(cache) == 50 and cache.meta["n_shards"] == 4
    idx = torch.tensor([41, 3, 17, 3])
    batch = torch.utils.data.default_collate([data[i] for i in idx.tolist()])
    live = distiller.teacher_targets(batch)
    cached = cache.lookup(idx)
    assert set(cached) == set(live) == {"output", "view:feat", "view:routed", "view:spec", "view:conn"}
    for name in live:
        assert cached[name].shape == live[name].shape
        torch.testing.assert_close(cached[name], live[name], rtol=2e-3, atol=2e-3)
    # The cached values drive the same loss as the live teacher.
    torch.manual_seed(1)
    loss_live, _ = distiller.training_step(batch)
    torch.manual_seed(1)
    loss_cached, _ = distiller.training_step(batch, cached)
    assert loss_cached.item() == pytest.approx(loss_live.item(), rel=1e-2)


def test_stale_cache_is_rebuilt_and_valid_cache_reused(tmp_path, distiller):
    data = ToyEEG(20, 0)
    build_cache(tmp_path / "c", distiller.teacher_targets, data, _key(distiller), shard_size=8, log=lambda m: None)
    logs = []
    build_cache(tmp_path / "c", distiller.teacher_targets, data, _key(distiller), shard_size=8, log=logs.append)
    assert any("valid; reusing" in m for m in logs)
    with torch.no_grad():
        distiller.teacher.head.bias.add_(1.0)  # another teacher
    logs = []
    cache = build_cache(tmp_path / "c", distiller.teacher_targets, data, _key(distiller), shard_size=8, log=logs.append)
    assert any("stale (changed: teacher)" in m for m in logs)
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])
    torch.testing.assert_close(
        cache.lookup(torch.arange(4))["output"], distiller.teacher_targets(batch)["output"], rtol=2e-3, atol=2e-3
    )


def test_interrupted_build_resumes_and_cut_shard_is_rebuilt(tmp_path, distiller):
    data = ToyEEG(40, 0)
    with pytest.raises(InterruptedError):
        build_cache(
            tmp_path / "c",
            distiller.teacher_targets,
            data,
            _key(distiller),
            shard_size=8,
            max_shards=2,
            log=lambda m: None,
        )
    assert sorted(p.name for p in (tmp_path / "c").glob("shard-*")) == ["shard-00000", "shard-00001"]
    (tmp_path / "c" / ".tmp-shard-00002").mkdir()  # a shard cut short by a crash
    (tmp_path / "c" / ".tmp-shard-00002" / "output.npy").write_bytes(b"\x93NUMPY partial")
    logs = []
    cache = build_cache(tmp_path / "c", distiller.teacher_targets, data, _key(distiller), shard_size=8, log=logs.append)
    assert any("cut short" in m for m in logs)
    assert any("built 3 of 5 shards" in m for m in logs)
    assert len(cache) == 40 and not list((tmp_path / "c").glob(".tmp-*"))
