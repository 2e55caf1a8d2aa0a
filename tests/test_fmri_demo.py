"""``biokd demo fmri --quick`` through the registry: generated sites → teacher, student distilled and alone, the
per-site table, leave-site-out over both sites and a two-site continual sequence with its accuracy matrices."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from biokd.fmri.demo import QUICK
from biokd.registry import DEMOS, resolve

MODELS = ("teacher", "student (distilled)", "student (alone)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("fmri-demo")
    report = resolve(DEMOS, "fmri", "demo")(out, True, 0)
    return out, report, (out / "report.md").read_text(), json.loads((out / "metrics.json").read_text())


def _table(text: str, heading: str) -> list[list[str]]:
    """The body rows of the Markdown table under the first heading starting with ``heading``."""
    rows: list[str] = []
    for line in text.split("## " + heading, 1)[1].splitlines()[1:]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    return [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in rows[2:]]


def test_report_says_the_data_are_generated_and_shows_both_students(demo):
    out, report, text, _ = demo
    assert report.is_file() and report.suffix == ".html"
    assert "GENERATED" in text and "NOT pretrained" in text
    rows = {row[0]: row for row in _table(text, "Stratified fold")}
    assert set(rows) == set(MODELS)
    run = json.loads((out / "runs" / "student" / "metrics.json").read_text())
    for name in MODELS:  # the summary repeats the run's own figures
        assert rows[name][1] == f"{run[name]['auroc']:.3f}"
        assert rows[name][2] == f"{run[name]['balanced_accuracy']:.3f}"
    assert int(rows["teacher"][3].replace(",", "")) > int(rows["student (alone)"][3].replace(",", ""))


def test_per_site_table_counts_each_sites_test_subjects(demo):
    out, _, text, _ = demo
    test = pd.read_csv(out / "store" / "manifest.csv").query("split == 'test'")
    expected = test.groupby("site")["subject"].nunique().to_dict()
    assert len(expected) == QUICK.n_sites  # the stratified test fold reaches both sites
    rows = _table(text, "Per site")
    assert len(rows) == len(expected) * len(MODELS)
    for site, model, subjects, *_ in rows:
        assert model in MODELS and int(subjects) == expected[site]


def test_leave_site_out_holds_out_each_site_in_turn(demo):
    out, _, _, metrics = demo
    loso = metrics["leave_site_out"]
    sites = sorted(pd.read_csv(out / "abide" / "Phenotypic_V1_0b_preprocessed1.csv")["SITE_ID"].unique())
    assert loso["sites"] == sites and len(sites) == 2
    assert [(r["site"], r["model"]) for r in loso["rows"]] == [(s, m) for s in sites for m in MODELS]
    for row in loso["rows"]:
        manifest = pd.read_csv(out / "leave_site_out" / f"store-{row['site']}" / "manifest.csv")
        assert set(manifest.loc[manifest["split"] == "test", "site"]) == {row["site"]}
        assert row["subjects"] == QUICK.subjects_per_site
        assert 0.0 <= row["auroc"] <= 1.0


def test_continual_matrix_and_its_aaa_bwt(demo):
    _, _, text, metrics = demo
    cont = metrics["continual"]
    assert len(cont["sites"]) == 2
    for regime in ("finetune", "replay", "joint"):
        acc = np.array(cont[regime]["accuracy_matrix"])
        assert acc.shape == (2, 2) and acc[0, 1] == 0.0  # site 2 not yet seen after site 1
        n = np.array([cont["n_test_subjects"][s] for s in cont["sites"]])
        assert np.allclose(acc * n, np.round(acc * n))  # accuracies over each site's test subjects
        assert cont[regime]["aaa"] == pytest.approx((acc[0, 0] + (acc[1, 0] + acc[1, 1]) / 2) / 2)
        assert cont[regime]["bwt"] == pytest.approx(acc[1, 0] - acc[0, 0])
        rows = _table(text, f"Accuracy matrix, {regime}")
        assert rows == [
            [cont["sites"][0], f"{acc[0, 0]:.3f}", ""],
            [cont["sites"][1], f"{acc[1, 0]:.3f}", f"{acc[1, 1]:.3f}"],
        ]
    summary = {row[0]: row for row in _table(text, "Continual learning")}
    assert summary["replay"][1:3] == [f"{cont['replay']['aaa']:.3f}", f"{cont['replay']['bwt']:.3f}"]
