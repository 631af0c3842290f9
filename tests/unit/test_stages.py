"""The stage registry (adeptlm/train/stages.py): every registered stage is a command with its own
--help, a recipe key and a report line; an option of another stage's data is hidden from a stage's
--help and refused in one line (the seed's one accepted-and-ignored SFT option gets a note)."""

from __future__ import annotations

from adeptlm.train.stages import NAMES, get
from conftest import run_adept


def test_every_registered_stage_is_a_command_and_a_recipe_key(tmp_path):
    rc = run_adept("--help")
    assert rc.returncode == 0
    for name in NAMES:
        st = get(name)
        assert st.name == name and st.summary.split(";")[0][:30] in " ".join(rc.stdout.split())
        help_ = run_adept(name, "--help")
        assert help_.returncode == 0 and f"usage: adept {name}" in help_.stdout


def test_stage_options_belong_to_their_stage(tmp_path):
    rc = run_adept("dpo", "--help")
    assert rc.returncode == 0 and "--block_size" not in rc.stdout and "--max_prompt_length" in rc.stdout
    rc = run_adept("sft", "--help")
    assert "--max_prompt_length" not in rc.stdout and "--max_seq_length" in rc.stdout
    rc = run_adept("dpo", "--block_size", "64")
    assert rc.returncode == 2 and "not an option of adept dpo" in rc.stderr and "adept pt" in rc.stderr
    assert len(rc.stderr.strip().splitlines()) == 1, rc.stderr
    rc = run_adept("dpo", "--kl_to_base", "0.1")
    assert rc.returncode == 2 and "adept pt, adept sft" in rc.stderr
