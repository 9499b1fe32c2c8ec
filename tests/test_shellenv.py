"""Shell export: what real bash reads back from ``eval`` of the lines is exactly the config."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.config.shellenv import env_name, export_lines
from cellframe.config.txtconfig import NodeConfig

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def bash_env(lines: list[str]) -> dict[str, str]:
    """``eval`` the lines in a clean bash and return the CELLFRAME_ variables it then exports."""
    script = 'eval "$(cat)"; env -0'
    done = subprocess.run(
        [BASH, "--noprofile", "--norc", "-c", script],
        input="\n".join(lines).encode(), capture_output=True, env={"PATH": "/usr/bin:/bin"},
        check=True, timeout=10,
    )
    pairs = (item.split(b"=", 1) for item in done.stdout.split(b"\0") if item)
    return {k.decode(): v.decode() for k, v in pairs if k.startswith(b"CELLFRAME_")}


AWKWARD = {
    "spaces": "  two  spaces  ",
    "quotes": "it's \"quoted\"",
    "dollar": "$HOME ${PATH} $(echo no) $((1+1))",
    "backticks": "`rm -rf /` and \\`",
    "newlines": "line 1\nline 2\n\n",
    "unicode": "größe ✓ 日本",
    "equals": "a=b=c",
    "empty": "",
    "glob": "* ? [a-z] ~",
    "semicolon": "x; exit 3 & | > <",
}


def test_eval_in_bash_reproduces_every_awkward_value_exactly():
    lines, rejected = export_lines(AWKWARD)
    assert rejected == []
    expected = {f"CELLFRAME_{key.upper()}": value for key, value in AWKWARD.items()}
    assert bash_env(lines) == expected


@settings(deadline=None, max_examples=40)
@given(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0")))
def test_any_value_without_nul_survives_eval_in_bash(value):
    lines, _ = export_lines({"value": value})
    assert bash_env(lines) == {"CELLFRAME_VALUE": value}


def test_keys_become_upper_case_names_with_dashes_and_dots_as_underscores():
    assert env_name("shard-id") == "CELLFRAME_SHARD_ID"
    assert env_name("store.segment-bytes") == "CELLFRAME_STORE_SEGMENT_BYTES"
    assert env_name("data dir") is None
    assert env_name("größe") is None


def test_keys_that_are_not_shell_names_are_reported_not_printed():
    lines, rejected = export_lines({"ok": "1", "data dir": "x", "größe": "2", "a/b": "3"})
    assert lines == ["export CELLFRAME_OK=1"]
    assert rejected == ["data dir", "größe", "a/b"]


def test_colliding_names_and_nul_values_are_reported_not_printed():
    lines, rejected = export_lines({"web-x": "1", "web.x": "2", "nul": "a\0b"})
    assert lines == ["export CELLFRAME_WEB_X=1"]
    assert rejected == ["web.x", "nul"]


def test_a_node_config_exports_its_name_and_role_first():
    config = NodeConfig("web-01", "web", {"role": "web", "weight": "10", "name": "other"})
    lines, rejected = export_lines(config)
    assert bash_env(lines) == {
        "CELLFRAME_NAME": "web-01", "CELLFRAME_ROLE": "web", "CELLFRAME_WEIGHT": "10",
    }
    assert lines[:2] == ["export CELLFRAME_NAME=web-01", "export CELLFRAME_ROLE=web"]
    assert rejected == ["name"]


def test_a_spare_exports_an_empty_role():
    lines, _ = export_lines(NodeConfig("spare-01", None, {"rack": "r1"}))
    assert bash_env(lines)["CELLFRAME_ROLE"] == ""


def test_another_prefix_can_be_chosen():
    assert export_lines({"k": "v"}, prefix="APP_")[0] == ["export APP_K=v"]
