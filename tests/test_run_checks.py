"""What a run checks before it loads a model or writes its folder, and what makes runs repeat."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fault_driver import SPEC, SPLIT  # the tiny EEG store the fault tests build too
from fault_driver import subject_items as tiny_subject

from biokd.config import load_config
from biokd.data.store import build_store
from biokd.errors import ConfigError, LeakageError
from biokd.pipeline import RunConfig, distill, train_teacher


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    src = {}
    for s in SPLIT:
        (root / f"{s}.txt").write_text(s)
        src[s] = [root / f"{s}.txt"]
    build_store(root / "data", src, tiny_subject, {}, SPEC)
    return root / "data"


TEACHER = """
data: {{root: {root}}}
teacher: {{name: cbramod, kwargs: {{n_layer: 1, head: avgpool}}}}
train: {{epochs: 1, batch_size: 8, progress: false, select_metric: {metric}}}
n_boot: 20
"""
DISTILL = """
data: {{root: {root}}}
teacher: {{run: {teacher}}}
student: {{name: mic, kwargs: {{d_model: 16, depth: 1}}}}
distill:
  terms:
    - {{name: task, kind: task}}
    - {{name: kd, kind: kd, temperature: 2.0}}
    - {{name: layers, kind: feature, teacher: [backbone.encoder.layers.0], student: {student}, metric: cosine}}
    - {{name: spec, kind: spectral, teacher: [backbone.encoder.layers.0], student: mimic, pool: [1], {band}}}
  baseline: false
train: {{epochs: 1, batch_size: 8, progress: false, seed: 3}}
n_boot: 20
"""


def config(tmp_path: Path, text: str, overrides: list[str] | None = None, **fields: str) -> RunConfig:
    path = tmp_path / "c.yaml"
    path.write_text(text.format(**fields))
    return load_config(RunConfig, path, overrides)


@pytest.fixture(scope="module")
def teacher_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("teacher")
    train_teacher(config(tmp, TEACHER, root=str(data), metric="auto"), tmp / "run")
    return tmp / "run"


def test_unknown_selection_metric_is_refused_before_any_model(data: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, TEACHER, root=str(data), metric="rmse")
    with pytest.raises(ConfigError, match="'rmse' is not a validation metric of a classification task"):
        train_teacher(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_teacher_run_records_its_data_and_says_it_was_not_pretrained(teacher_run: Path) -> None:
    import json

    record = json.loads((teacher_run / "data.json").read_text())
    assert record["subjects"] == {"train": ["s1", "s2", "s3"], "val": ["s4"], "test": ["s5", "s6"]}
    assert "trained from scratch" in (teacher_run / "report.md").read_text()


@pytest.mark.parametrize(
    ("student", "band", "message"),
    [
        ("mimc", "sfreq: 1.0", "has no submodule 'mimc'. Did you mean 'mimic'"),
        ("mimic", "sfreq: 1.0, bands: {alfa: 1.0}", r"unknown band\(s\) \['alfa'\]"),
        ("mimic", "bands: {alpha: 1.0}", "band weights need `sfreq`"),
    ],
)
def test_config_mistakes_are_one_clear_error(
    data: Path, teacher_run: Path, tmp_path: Path, student: str, band: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        cfg = config(tmp_path, DISTILL, root=str(data), teacher=str(teacher_run), student=student, band=band)
        distill(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_set_reaches_terms_by_name(data: Path, teacher_run: Path, tmp_path: Path) -> None:
    fields = {"root": str(data), "teacher": str(teacher_run), "student": "mimic", "band": "sfreq: 1.0"}
    cfg = config(tmp_path, DISTILL, ["distill.terms.kd.temperature=7"], **fields)
    assert cfg.distill.terms[1].temperature == 7.0
    with pytest.raises(ConfigError, match="no list item named 'kdd'; names here: task, kd, layers, spec"):
        config(tmp_path, DISTILL, ["distill.terms.kdd.temperature=7"], **fields)


def test_a_teacher_that_trained_on_test_subjects_is_refused(data: Path, teacher_run: Path, tmp_path: Path) -> None:
    import json

    record = json.loads((teacher_run / "data.json").read_text())
    leaky = tmp_path / "leaky"
    import shutil

    shutil.copytree(teacher_run, leaky)
    record["subjects"]["train"].append("s5")
    (leaky / "data.json").write_text(json.dumps(record))
    fields = {"root": str(data), "teacher": str(leaky), "student": "mimic", "band": "sfreq: 1.0"}
    with pytest.raises(LeakageError, match="evaluation splits \\(test: s5\\)"):
        distill(config(tmp_path, DISTILL, **fields), tmp_path / "run")
    cfg = config(tmp_path, DISTILL, ["teacher.allow_overlap=true"], **fields)
    with pytest.raises(LeakageError, match="three different splits"):
        cfg.data.test_split = "train"
        distill(cfg, tmp_path / "run2")


def test_distillation_repeats_bit_for_bit_and_a_changed_config_is_not_resumed(
    data: Path, teacher_run: Path, tmp_path: Path
) -> None:
    fields = {"root": str(data), "teacher": str(teacher_run), "student": "mimic", "band": "sfreq: 1.0"}
    weights = []
    for run in ("a", "b"):
        distill(config(tmp_path, DISTILL, **fields), tmp_path / run)
        weights.append(torch.load(tmp_path / run / "checkpoints" / "best.pt", weights_only=True)["student"])
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    with pytest.raises(ConfigError, match=r"holds a run of another config \(train.seed: 3 → 4"):
        distill(config(tmp_path, DISTILL, ["train.seed=4"], **fields), tmp_path / "a")


def test_cli_prints_one_line_and_exits_2(data: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(TEACHER.format(root=data, metric="rmse") + "train: {batch_size: 0}\n")
    path.write_text(f"data: {{root: {data}}}\nteacher: {{name: cbramod}}\ntrain: {{batch_size: 0}}\n")
    cmd = [sys.executable, "-m", "biokd.cli", "train-teacher", str(path), "--out", str(tmp_path / "r")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "train.batch_size: invalid value 0" in result.stderr and len(result.stderr.strip().splitlines()) == 1
