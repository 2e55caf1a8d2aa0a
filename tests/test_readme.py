"""The README's commands exist with the options it shows, and its figures are the ones the code measures."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _readme_commands() -> list[list[str]]:
    """Every ``biokd …`` command line in the README's bash blocks (continuations joined)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            for part in re.split(r"&&|;", line):
                words = shlex.split(part)
                if words and words[0].endswith("biokd"):
                    commands.append(words[1:])
    return commands


def test_readme_commands_exist_with_their_options() -> None:
    import typer

    from biokd.cli import app

    commands = _readme_commands()
    assert len(commands) >= 8
    cli = typer.main.get_command(app)
    for words in commands:
        command = cli
        rest = list(words)
        while hasattr(command, "commands") and rest and not rest[0].startswith("-"):  # a group: go down
            assert rest[0] in command.commands, f"README: biokd {' '.join(words)}: no command {rest[0]!r}"
            command = command.commands[rest.pop(0)]
        assert not hasattr(command, "commands"), f"README: biokd {' '.join(words)} names no command"
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for word in rest:
            if word.startswith("--"):
                assert word.split("=")[0] in options, f"README: biokd {' '.join(words)}: no option {word}"


def test_readme_physionet_root_is_the_release_folder() -> None:
    roots = [w[w.index("--root") + 1] for w in _readme_commands() if w[:2] == ["preprocess", "physionet-mi"]]
    assert roots and all(r.endswith("files/eegmmidb/1.0.0") for r in roots)  # the folder holding S001/ … S109/


def test_readme_flop_ratio_is_for_the_head_the_configs_use() -> None:
    from biokd.eeg.cbramod import CBraModTeacher
    from biokd.eeg.mic import MiC
    from biokd.profiling import count_flops

    head = yaml.safe_load((ROOT / "configs" / "faced-teacher.yaml").read_text())["teacher"]["kwargs"]["head"]
    with torch.device("meta"):  # shapes only: a 128 M-parameter head is counted without allocating it
        x = torch.empty(1, 32, 2000)
        teacher = count_flops(CBraModTeacher(n_chans=32, n_times=2000, n_outputs=9, head=head), x)
        student = count_flops(MiC(n_chans=32, n_times=2000, n_outputs=9), x)
    line = next(row for row in README.splitlines() if row.startswith("| MiC at FACED size"))
    assert f"{student / 1e6:.1f} MFLOPs" in line
    assert f"{teacher / student:.1f}× fewer than the CBraMod teacher with the `{head}` head" in line
    assert f"({teacher / 1e9:.3f} GFLOPs" in line


@pytest.mark.parametrize("name", ["physionet-mi-teacher.yaml", "faced-teacher.yaml"])
def test_configs_name_a_teacher_head(name: str) -> None:
    assert yaml.safe_load((ROOT / "configs" / name).read_text())["teacher"]["kwargs"]["head"] == "all_patch_reps"
