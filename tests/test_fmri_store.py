"""ABIDE on the core: generated sites as real .1D files → store (spec, splits), group stages fitted on training
subjects only, the pipeline's per-site table, continual learning across sites."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from biokd.data.reader import ShardDataset
from biokd.data.stages import StageConfig, fit_stages
from biokd.data.transforms import Compose
from biokd.fmri.abide import AbideProtocol
from biokd.fmri.preprocess import preprocess_abide
from biokd.fmri.synthetic import write_synthetic_abide


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("abide")
    write_synthetic_abide(root, n_sites=3, subjects_per_site=10, n_rois=8, seed=1)
    return root


def _store(release: Path, out: Path, **kw) -> ShardDataset:
    preprocess_abide(release, out, AbideProtocol(n_rois=8, n_folds=3, **kw), progress=False)
    return ShardDataset(out)


def test_store_spec_rows_and_kfold_splits(release, tmp_path):
    ds = _store(release, tmp_path / "s")
    spec = ds.spec
    assert spec.dataset == "abide" and spec.input("fc").shape == [8, 8] and spec.input("fc").axes == ["roi", "roi"]
    assert len(spec.input("fc").labels["roi"]) == 8
    assert spec.target.kind == "binary" and spec.target.classes == ["control", "autism"]
    m = ds.manifest
    assert {"subject", "site", "label", "age", "sex", "split"} <= set(m.columns)
    by_subject = m.groupby("subject")["split"].nunique()
    assert (by_subject == 1).all() and set(m["split"]) == {"train", "val", "test"}
    # stratified: both classes in the test fold; the fc item equals numpy's corrcoef of its .1D file
    assert set(m.loc[m["split"] == "test", "label"]) == {0, 1}
    item = ds[0]
    ts = np.loadtxt(next(release.rglob(f"{item['subject']}_rois_cc200.1D")))
    assert torch.allclose(item["fc"], torch.as_tensor(np.corrcoef(ts.T), dtype=torch.float32), atol=1e-5)
    # another fold: other test subjects, same shards layout
    other = _store(release, tmp_path / "s1", fold=1).manifest
    assert set(other.loc[other["split"] == "test", "subject"]).isdisjoint(m.loc[m["split"] == "test", "subject"])


def test_leave_one_site_out_split(release, tmp_path):
    m = _store(release, tmp_path / "s", split="leave_one_site_out", test_site="SITE_B").manifest
    assert set(m.loc[m["split"] == "test", "site"]) == {"SITE_B"}
    assert "SITE_B" not in set(m.loc[m["split"] != "test", "site"])


def test_small_training_site_gets_a_validation_subject_of_each_class():
    """12 training subjects × 0.1 would give a 1-subject validation set, which cannot hold both classes."""
    from biokd.fmri.abide import assign_splits

    table = pd.DataFrame(
        {"FILE_ID": [f"S{i:02d}" for i in range(24)], "SITE_ID": ["A"] * 12 + ["B"] * 12, "DX_GROUP": [1, 2] * 12}
    )
    splits = assign_splits(table, AbideProtocol(split="leave_one_site_out", test_site="B"))
    val = [i for i, (sid, part) in enumerate(splits.items()) if part == "val"]
    assert sorted(table.loc[val, "DX_GROUP"]) == [1, 2]
    assert {splits[f"S{i:02d}"] for i in range(12, 24)} == {"test"}


def test_tangent_stage_fitted_on_training_subjects_only(release, tmp_path):
    root = tmp_path / "s"
    _store(release, root, connectivity="tangent")
    stage = fit_stages(root, [StageConfig("tangent")], "train")[0]
    record = json.loads(next((root / "stages").glob("tangent-*.json")).read_text())
    train = set(ShardDataset(root, "train").subjects)
    assert set(record["fitted_on"]) == train
    test = ShardDataset(root, "test", Compose([stage]))
    item = test[0]
    assert item["fc"].shape == (8, 8) and "timeseries" not in item
    # a test subject's data changed (and the fit redone from scratch): the reference does not move
    before = stage.state["tangent_mean"].copy()
    for path in (root / "stages").iterdir():
        path.unlink()
    shard = root / "shards" / f"{item['subject']}.timeseries.npy"
    np.save(shard, np.random.default_rng(0).normal(size=np.load(shard).shape).astype(np.float32))
    again = fit_stages(root, [StageConfig("tangent")], "train")[0]
    assert np.allclose(again.state["tangent_mean"], before)
    assert not torch.allclose(ShardDataset(root, "test", Compose([again]))[0]["fc"], item["fc"])


def test_pipeline_reports_per_site(release, tmp_path):
    from biokd.config import from_dict
    from biokd.pipeline import RunConfig, train_teacher

    root = tmp_path / "s"
    _store(release, root)
    cfg = from_dict(RunConfig, {
        "data": {"root": str(root)},
        "teacher": {"name": "brainnetcnn"},
        "train": {"epochs": 1, "batch_size": 8},
        "n_boot": 10,
        "report_by": ["site"],
    })  # fmt: skip
    metrics = train_teacher(cfg, tmp_path / "run")
    groups = metrics["teacher"]["groups"]["site"]
    test = ShardDataset(root, "test").manifest
    assert set(groups) == set(test["site"])
    for site, rep in groups.items():
        assert rep["n_units"] == test.loc[test["site"] == site, "subject"].nunique()
    assert "Per site" in (tmp_path / "run" / "report.md").read_text()


def test_continual_regimes_give_accuracy_matrices(release, tmp_path):
    from biokd.fmri.continual_run import ContinualConfig, run_continual

    root = tmp_path / "s"
    _store(release, root)
    cfg = ContinualConfig(epochs=1, vae_epochs=1, generated_per_class=2, memory=8, replay_batch=4)
    out = run_continual(root, tmp_path / "c", cfg)
    assert out["sites"] == ["SITE_A", "SITE_B", "SITE_C"]
    for regime in ("finetune", "replay", "joint"):
        acc = np.asarray(out[regime]["accuracy_matrix"])
        assert acc.shape == (3, 3) and np.all(np.triu(acc, 1) == 0) and np.all((acc >= 0) & (acc <= 1))
        assert out[regime]["aaa"] == pytest.approx(np.mean([acc[i, : i + 1].mean() for i in range(3)]))
    assert json.loads((tmp_path / "c" / "continual.json").read_text())["sites"] == out["sites"]


def test_bad_file_is_skipped_and_counted(release, tmp_path):
    import shutil

    copy = tmp_path / "rel"
    shutil.copytree(release, copy)
    victim = sorted(copy.rglob("*_rois_cc200.1D"))[0]
    victim.write_text(victim.read_text().splitlines()[0] + "\n")  # header only
    report = preprocess_abide(copy, tmp_path / "s", AbideProtocol(n_rois=8, n_folds=3), skip_bad=True, progress=False)
    subject = victim.name.removesuffix("_rois_cc200.1D")
    assert subject in report.skipped and "only a header" in report.skipped[subject]
    assert subject not in set(pd.read_csv(tmp_path / "s" / "manifest.csv")["subject"])
