"""The bad-input corpus: every case runs through the CLI and must end in one line naming the file, exit 2,
no traceback, nothing written before changed and nothing executed.

Each case writes its inputs in the real on-disk format (OhioT1DM XML, FACED pickles, torch checkpoints,
YAML configs, run folders) and returns the command line, the text the error line must hold, and the
folder whose files must not change. RELIABILITY.md lists the cases and their outcomes.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

Case = Callable[[Path], tuple[list[str], str]]
CASES: dict[str, Case] = {}
MARKER = "executed-marker"  # every payload would create tmp/<MARKER>


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


# -- writers in the real formats -----------------------------------------------------------------------------
def _ts(minutes: float) -> str:
    return (datetime(2022, 1, 1) + timedelta(minutes=minutes)).strftime("%d-%m-%Y %H:%M:%S")


def _ohio_xml(pid: str, first_slot: int, n_slots: int, body: str = "") -> str:
    cgm = "".join(f'<event ts="{_ts(5 * k + 0.5)}" value="{100 + k % 50}"/>' for k in range(first_slot, n_slots))
    return f'<patient id="{pid}"><glucose_level>{cgm}</glucose_level><basal/><bolus/><meal/>{body}</patient>\n'


def _ohio_release(tmp: Path, training: str | None = None, testing: str | None = None) -> Path:
    root = tmp / "ohio"
    root.mkdir(exist_ok=True)
    (root / "540-ws-training.xml").write_text(training or _ohio_xml("540", 0, 96))
    (root / "540-ws-testing.xml").write_text(testing or _ohio_xml("540", 96, 144))
    return root


def _run_folder(tmp: Path, spec: dict | None = None, checkpoint: bytes | None = None) -> Path:
    import torch

    from biokd.glucose.gluconet import GlucoNet
    from biokd.models import model_spec

    run = tmp / "run"
    (run / "checkpoints").mkdir(parents=True)
    model = GlucoNet(n_times=6, n_outputs=2, conv_channels=4, lstm_hidden=4, d_model=8, n_heads=2,
                     dim_feedforward=16, head_hidden=4, drop_prob=0.0, vmd_iter=1)  # fmt: skip
    (run / "model.json").write_text(json.dumps(spec or model_spec(model)))
    (run / "config.yaml").write_text(f"task: forecasting\ndata: {{root: {tmp / 'nodata'}}}\n")
    if checkpoint is None:
        torch.save({"student": model.state_dict()}, run / "checkpoints" / "best.pt")
    else:
        (run / "checkpoints" / "best.pt").write_bytes(checkpoint)
    return run


class _Payload:
    """Unpickled by plain ``pickle``, it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


# -- the cases -----------------------------------------------------------------------------------------------
@case
def model_json_names_a_package_function(tmp: Path):
    run = _run_folder(tmp, {"class": "biokd._io.write_text", "kwargs": {"path": str(tmp / MARKER), "text": "x"}})
    return ["export", str(run), "--out", str(tmp / "x.onnx")], "model.json"


@case
def malicious_checkpoint(tmp: Path):
    run = _run_folder(tmp, checkpoint=pickle.dumps({"student": _Payload(tmp / MARKER)}))
    return ["export", str(run), "--out", str(tmp / "x.onnx")], "best.pt: refused by weights-only loading"


@case
def export_n_heldout_zero(tmp: Path):
    return ["export", str(_run_folder(tmp)), "--n-heldout", "0"], "--n-heldout"


@case
def export_out_is_a_folder(tmp: Path):
    (tmp / "exists").mkdir()
    return ["export", str(_run_folder(tmp)), "--out", str(tmp / "exists")], f"{tmp / 'exists'}: is a folder"


@case
def export_out_under_a_file(tmp: Path):
    (tmp / "afile").write_text("keep")
    return ["export", str(_run_folder(tmp)), "--out", str(tmp / "afile" / "x.onnx")], f"{tmp / 'afile'}: is a file"


@case
def yaml_python_tag(tmp: Path):
    cfg = tmp / "evil.yaml"
    cfg.write_text(f"train: !!python/object/apply:os.system ['touch {tmp / MARKER}']\n")
    return ["train-teacher", str(cfg), "--out", str(tmp / "run")], "evil.yaml: not valid YAML"


@case
def yaml_alias_bomb(tmp: Path):
    lines = ["teacher:", "  name: cbramod", "  kwargs:", '    a0: &a0 ["lol", "lol", "lol", "lol", "lol"]']
    lines += [f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 13)]
    (tmp / "bomb.yaml").write_text("\n".join(lines) + "\n")
    return ["train-teacher", str(tmp / "bomb.yaml"), "--out", str(tmp / "run")], "bomb.yaml: more than 100"


@case
def xml_entity_bomb(tmp: Path):
    ents = ['<!ENTITY e0 "lol">'] + [f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, 10)]
    bomb = f'<?xml version="1.0"?>\n<!DOCTYPE patient [{"".join(ents)}]>\n' + _ohio_xml("540", 0, 96).replace(
        "<basal/>", "<basal><event ts='&e9;' value='1'/></basal>"
    )
    root = _ohio_release(tmp, training=bomb)
    return ["preprocess", "ohiot1dm", "--root", str(root), "--out", str(tmp / "out")], "540-ws-training.xml"


@case
def faced_crafted_pickle(tmp: Path):
    from biokd.eeg.faced import write_synthetic_faced

    release = write_synthetic_faced(tmp / "FACED", [0], n_samples=50)
    (release / "Processed_data" / "sub000.pkl").write_bytes(pickle.dumps(_Payload(tmp / MARKER)))
    return ["preprocess", "faced", "--root", str(release), "--out", str(tmp / "out")], "sub000.pkl: refused"


@case
def ohio_out_is_a_file(tmp: Path):
    (tmp / "afile").write_text("keep")
    return ["preprocess", "ohiot1dm", "--root", str(_ohio_release(tmp)), "--out", str(tmp / "afile")], "afile"


@case
def physionet_out_under_a_file(tmp: Path):
    (tmp / "afile").write_text("keep")
    out = tmp / "afile" / "out"
    return ["preprocess", "physionet-mi", "--root", str(tmp), "--out", str(out)], f"{tmp / 'afile'}: is a file"


@case
def faced_out_is_a_file(tmp: Path):
    (tmp / "afile").write_text("keep")
    return ["preprocess", "faced", "--root", str(tmp), "--out", str(tmp / "afile")], "afile: --out is a file"


@case
def out_path_with_console_markup(tmp: Path):
    odd = tmp / "[bold]x"
    odd.write_text("keep")
    return ["preprocess", "ohiot1dm", "--root", str(_ohio_release(tmp)), "--out", str(odd)], "[bold]x: --out is a file"


@case
def ohio_horizons_not_positive(tmp: Path):
    root = _ohio_release(tmp)
    return ["preprocess", "ohiot1dm", "--root", str(root), "--out", str(tmp / "o"), "--horizons", "-6,0"], "-6,0"


@case
def ohio_testing_before_training(tmp: Path):
    root = _ohio_release(tmp, _ohio_xml("540", 96, 192), _ohio_xml("540", 0, 96))
    return ["preprocess", "ohiot1dm", "--root", str(root), "--out", str(tmp / "o")], "540-ws-testing.xml"


@case
def ohio_every_patient_skipped(tmp: Path):
    root = _ohio_release(tmp, training='<patient id="540"><glucose_level></patient>')
    args = ["preprocess", "ohiot1dm", "--root", str(root), "--out", str(tmp / "o"), "--skip-bad"]
    return args, "no subject could be preprocessed"


def _abide_release(tmp: Path, bad: str | None = None, extra: str | None = None) -> Path:
    """Two real-format .1D files (PCP layout) and a phenotypic CSV; ``bad`` replaces the first file's text."""
    folder = tmp / "abide" / "Outputs" / "cpac" / "filt_noglobal" / "rois_cc200"
    folder.mkdir(parents=True)
    header = "\t".join(f"#{2001 + i}" for i in range(4)) + "\t\n"
    rows = "".join("\t".join(f"{(7000 + 13 * t * (i + 1)) % 97 + 0.5:.1f}" for i in range(4)) + "\n" for t in range(20))
    ids = ["Pitt_0050003", "Pitt_0050004"]
    for k, file_id in enumerate(ids):
        (folder / f"{file_id}_rois_cc200.1D").write_text(bad if bad is not None and k == 0 else header + rows)
    if extra:
        (folder / f"{extra}_rois_cc200.1D").write_text(header + rows)
    table = "SUB_ID,SITE_ID,FILE_ID,DX_GROUP,AGE_AT_SCAN,SEX\n"
    table += "50003,PITT,Pitt_0050003,1,20,1\n50004,PITT,Pitt_0050004,2,21,2\n"
    (tmp / "abide" / "Phenotypic_V1_0b_preprocessed1.csv").write_text(table)
    return tmp / "abide"


def _abide(tmp: Path, root: Path) -> list[str]:
    return ["preprocess", "abide", "--root", str(root), "--out", str(tmp / "o"), "--set", "n_rois=4"]


@case
def abide_header_only_1d(tmp: Path):
    return _abide(tmp, _abide_release(tmp, bad="#2001\t#2002\t#2003\t#2004\n")), "Pitt_0050003_rois_cc200.1D"


@case
def abide_wrong_column_count(tmp: Path):
    bad = "#1\t#2\t#3\n" + "1\t2\t3\n" * 20
    return _abide(tmp, _abide_release(tmp, bad=bad)), "Pitt_0050003_rois_cc200.1D: 3 ROI columns; the atlas has 4"


@case
def abide_non_numeric_rows(tmp: Path):
    bad = "#1\t#2\t#3\t#4\n" + "1\t2\tx\t4\n" * 20
    return _abide(tmp, _abide_release(tmp, bad=bad)), "Pitt_0050003_rois_cc200.1D: non-numeric"


@case
def abide_no_filename(tmp: Path):
    return _abide(tmp, _abide_release(tmp, extra="no_filename")), "no_filename_rois_cc200.1D"


@case
def abide_subject_not_in_table(tmp: Path):
    return _abide(tmp, _abide_release(tmp, extra="Pitt_0050099")), "not in the phenotypic table"


def _oasis3(tmp: Path, centiloid: float | None = 30.0, mr_days: int = 100, pet_days: int = 200) -> Path:
    """Six OASIS-3 subjects in the download layout (T1w NIfTI, PET SUVR map, Centiloid table); the settings
    apply to OAS30001, the others are well formed (three folds need three subjects of each amyloid status)."""
    import nibabel as nib
    import numpy as np

    root = tmp / "oasis3"
    vol = np.random.default_rng(0).random((10, 10, 10)).astype("float32")
    rows = ["subject_id,oasis_session_id,tracer,Centiloid_fSUVR_rsf_TOT_CORTMEAN"]
    for k, (mr, pet, cl) in enumerate(
        [(mr_days, pet_days, centiloid), *[(100, 200, 40.0 * (k % 2)) for k in range(5)]], 1
    ):
        sid = f"OAS3{k:04d}"
        files = (
            root / f"{sid}_MR_d{mr:04d}" / "anat1" / f"sub-{sid}_ses-d{mr:04d}_T1w.nii.gz",
            root / f"{sid}_AV45_PUPTIMECOURSE_d{pet:04d}" / "pet_proc" / f"{sid}_AV45_d{pet:04d}_SUVR.nii.gz",
        )
        for path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(vol, np.diag([4.0, 4.0, 4.0, 1.0])), str(path))
        rows.append(f"{sid},{sid}_AV45_d{pet:04d},AV45,{'' if cl is None else cl}")
    (root / "OASIS3_amyloid_centiloid.csv").write_text("\n".join(rows) + "\n")
    return root


def _oasis3_args(tmp: Path, root: Path) -> list[str]:
    return ["preprocess", "oasis3", "--root", str(root), "--out", str(tmp / "out"), "--set", "n_folds=3"]


@case
def oasis3_truncated_nifti(tmp: Path):
    root = _oasis3(tmp)
    mri = next(root.rglob("sub-OAS30001_*_T1w.nii.gz"))
    mri.write_bytes(mri.read_bytes()[: mri.stat().st_size // 2])
    return _oasis3_args(tmp, root), "sub-OAS30001_ses-d0100_T1w.nii.gz"


@case
def oasis3_four_d_volume(tmp: Path):
    import nibabel as nib
    import numpy as np

    root = _oasis3(tmp)
    mri = next(root.rglob("sub-OAS30001_*_T1w.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6, 3), "float32"), np.eye(4)), str(mri))
    return _oasis3_args(tmp, root), "expected one 3-D volume"


@case
def oasis3_session_without_table_row(tmp: Path):
    return _oasis3_args(tmp, _oasis3(tmp, mr_days=100, pet_days=900)), "no MR session (d0100)"


@case
def oasis3_missing_centiloid(tmp: Path):
    return _oasis3_args(tmp, _oasis3(tmp, centiloid=None)), "OAS30001_AV45_d0200: Centiloid_fSUVR_rsf_TOT_CORTMEAN"


# -- evaluate on damaged run folders and data (issue 14 item 10) ----------------------------------------------
def _evaluate_run(tmp: Path, *, val_fraction: float = 0.2) -> Path:
    """A GlucoNet run folder beside a real OhioT1DM store (6-step history, 2 horizons) that it fits."""
    from biokd.glucose.ohiot1dm import OhioProtocol, preprocess_ohiot1dm

    protocol = OhioProtocol(history=6, horizons=(1, 2), score_start_min=0, val_fraction=val_fraction)
    preprocess_ohiot1dm(_ohio_release(tmp), tmp / "data", protocol)
    run = _run_folder(tmp)
    (run / "config.yaml").write_text(f"data: {{root: {tmp / 'data'}}}\n")
    return run


@case
def evaluate_n_boot_zero(tmp: Path):
    return ["evaluate", str(_evaluate_run(tmp)), "--n-boot", "0"], "--n-boot must be at least 1"


@case
def evaluate_without_model_json(tmp: Path):
    run = _evaluate_run(tmp)
    (run / "model.json").unlink()
    return ["evaluate", str(run)], "not a biokd run folder (no model.json)"


@case
def evaluate_garbled_model_json(tmp: Path):
    run = _evaluate_run(tmp)
    (run / "model.json").write_text('{"name": "gluconet", "kwargs": {"n_ti')
    return ["evaluate", str(run)], "model.json: not valid JSON"


@case
def evaluate_nan_weights(tmp: Path):
    import torch

    run = _evaluate_run(tmp)
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    first = next(k for k, v in state["student"].items() if v.is_floating_point())
    state["student"][first].fill_(float("nan"))
    torch.save(state, run / "checkpoints" / "best.pt")
    return ["evaluate", str(run)], f"best.pt: weights hold NaN or infinite values ({first}"


@case
def evaluate_empty_split(tmp: Path):
    run = _evaluate_run(tmp, val_fraction=0.0)
    return ["evaluate", str(run), "--split", "val"], "manifest.csv: no items in split 'val'"


@case
def evaluate_garbled_config(tmp: Path):
    run = _evaluate_run(tmp)
    (run / "config.yaml").write_text("data: {root: [unclosed\n")
    return ["evaluate", str(run)], "config.yaml: not a valid run config"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_exit_2(name, tmp_path):
    args, expected = CASES[name](tmp_path)
    before = _snapshot(tmp_path)
    env = {**os.environ, "COLUMNS": "10000"}  # one line, however long the path
    result = subprocess.run(
        [sys.executable, "-m", "biokd.cli", *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert not (tmp_path / MARKER).exists(), "a payload ran"
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing written before was changed


def test_safetensors_with_a_negative_shape_is_a_weights_error(tmp_path):
    import struct

    from biokd.errors import WeightsError
    from biokd.weights import read_safetensors

    header = json.dumps({"w": {"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}}).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    with pytest.raises(WeightsError, match=r"model\.safetensors: not a readable safetensors file"):
        read_safetensors(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write a read-only folder")
def test_read_only_out_is_one_line(tmp_path):
    root = _ohio_release(tmp_path)
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "biokd.cli", "preprocess", "ohiot1dm", "--root", str(root), "--out",
             str(tmp_path / "ro")], capture_output=True, text=True, cwd=tmp_path,
        )  # fmt: skip
    finally:
        (tmp_path / "ro").chmod(0o700)
    assert result.returncode == 2 and "not writable" in result.stderr and "Traceback" not in result.stderr
