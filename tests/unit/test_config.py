"""YAML configs and recipes: a broken file stops with one line naming the file and line, exit 2."""

from __future__ import annotations

import pytest

from adeptlm.config import read_yaml_mapping
from adeptlm.errors import AdeptError
from conftest import run_adept


def test_read_yaml_mapping(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("lora_rank: 8\nlearning_rate: 1.0e-4\n")
    assert read_yaml_mapping(good, "config file") == {"lora_rank": 8, "learning_rate": 1e-4}
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(AdeptError, match=r"bad\.yaml:\d+: invalid YAML"):
        read_yaml_mapping(bad, "config file")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(AdeptError, match="a recipe is a mapping"):
        read_yaml_mapping(listed, "recipe")
    with pytest.raises(AdeptError, match="no such recipe"):
        read_yaml_mapping(tmp_path / "absent.yaml", "recipe")


@pytest.mark.parametrize("command", [["sft"], ["run"]])
def test_broken_yaml_on_the_command_line(tmp_path, command):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsft: {a: 1\n")
    r = run_adept(*command, str(bad), cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "bad.yaml:" in lines[0] and "invalid YAML" in lines[0], r.stderr


def test_bad_replay_prompts_stop_before_any_model_loads(tmp_path):
    from adeptlm.pipeline import Run

    cases = {"missing.json": None, "broken.json": '["a",\n  "b"\n', "shape.json": '{"a": 1}'}
    expected = {"missing.json": "cannot read the prompts", "broken.json": "broken.json:3: invalid JSON",
                "shape.json": "a JSON list of strings"}
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        run = Run({"name": "x", "replay": {"prompts": str(tmp_path / name)}}, tmp_path / "run")
        with pytest.raises(AdeptError, match=expected[name]):
            run.stage_replay()
