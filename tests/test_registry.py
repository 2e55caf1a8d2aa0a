"""Registry-wide tests: every registered model and dataset, so a new entry cannot go untested."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from biokd.data.spec import DataSpec
from biokd.models import load_run_model, model_spec
from biokd.registry import DATASETS, MODELS, resolve

PACKAGE = Path(__file__).resolve().parents[1] / "biokd"

#: Per model: a dataset whose default spec it is built from, and small kwargs that keep the test fast.
MODEL_CASES: dict[str, tuple[str, dict]] = {
    "cbramod": ("physionet-mi", {"n_layer": 1, "head": "avgpool"}),
    "mic": ("physionet-mi", {}),
    "glucose_transformer": ("ohiot1dm", {"n_layers": 1}),
    "gluconet": ("ohiot1dm", {}),
    "brainnet_transformer": ("abide", {"d_model": 16, "n_heads": 2, "depth": 1, "ff_dim": 32, "n_clusters": 4}),
    "brainnetcnn": ("abide", {}),
    # weights=None: BiomedCLIP's vision tower randomly initialised (a tiny ViT here); no folder, no network
    "biomedclip": (
        "oasis3",
        {"vision_model": "vit_tiny_patch16_224", "embed_dim": 16, "n_groups": 2, "fused_dim": 16, "n_heads": 2},
    ),
    "mri_resnet": ("oasis3", {"widths": [4, 8, 8, 16], "embed_dim": 8}),
}
MODALITY_FOLDERS = ("eeg", "glucose", "fmri", "mri")


def default_spec(dataset: str) -> DataSpec:
    return resolve(DATASETS, dataset, "dataset")().spec()


def test_every_registered_model_and_dataset_is_covered() -> None:
    assert set(MODEL_CASES) == set(MODELS), "add the new model to MODEL_CASES"


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_dataset_spec_round_trips(dataset: str) -> None:
    spec = default_spec(dataset)
    again = DataSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and spec.dataset == dataset and "subject" in spec.metadata


@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_model_builds_from_spec_runs_reloads_and_exports(name: str, tmp_path: Path) -> None:
    dataset, kwargs = MODEL_CASES[name]
    spec = default_spec(dataset)
    cls = resolve(MODELS, name, "model")
    torch.manual_seed(0)
    model = cls(**{**cls.spec_sizes(spec), **kwargs}).eval()
    inputs = tuple(torch.randn(2, *spec.input(k).shape) for k in model.input_keys)
    with torch.no_grad():
        out = model(*inputs)
    assert out.shape == (2, spec.target.n_outputs)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "model.json").write_text(json.dumps(model_spec(model)))
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoints" / "best.pt")
    again = load_run_model(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(*inputs), out)
    exported = torch.export.export(model, inputs)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(*inputs), out, rtol=1e-4, atol=1e-4)


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    pkg = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(pkg[: len(pkg) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names += [module] + [f"{module}.{a.name}" for a in node.names]
    return names


def test_the_core_imports_no_modality() -> None:
    core = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in MODALITY_FOLDERS]
    offenders = {
        str(p.relative_to(PACKAGE)): sorted({n for n in _imports(p) if n.split(".")[:2][-1] in MODALITY_FOLDERS})
        for p in core
    }
    offenders = {k: v for k, v in offenders.items() if v and k != "cli.py"}
    assert not offenders, f"core modules import modality folders: {offenders}"
