"""Configs are bounded: an alias bomb or an oversized document is refused before it is built."""

from __future__ import annotations

import pytest

from biokd.config import MAX_ALIASES, load_config
from biokd.errors import ConfigError
from biokd.pipeline import RunConfig


def billion_laughs(levels: int = 12) -> str:
    """10**levels strings in a few lines, under a key whose values are free-form (model kwargs)."""
    lines = ["teacher:", "  name: cbramod", "  kwargs:", '    a0: &a0 ["lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    with pytest.raises(ConfigError, match=f"bomb.yaml: more than {MAX_ALIASES} YAML aliases"):
        load_config(RunConfig, path)


def test_alias_bomb_in_an_override_is_refused():
    value = "[" + ", ".join(["&x [1]"] + ["*x"] * (MAX_ALIASES + 1)) + "]"
    with pytest.raises(ConfigError, match="aliases"):
        load_config(RunConfig, None, [f"train.epochs={value}"])


def test_oversized_config_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="bytes; a config holds at most"):
        load_config(RunConfig, path)


def test_a_few_aliases_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("data: {root: &r /x}\nteacher: {name: cbramod}\ntrain: {epochs: 3}\nstudent: {name: mic}\n")
    assert load_config(RunConfig, path).train.epochs == 3
