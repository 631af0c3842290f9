"""adept orpo on a tiny model, the first method added through the stage registry: it trains (loss
finite and falling, the chosen replies gaining on the rejected), saves only LoRA weights, and records
its method and settings in run.json."""

from __future__ import annotations

import json
import math

import pytest
from safetensors import safe_open

from adeptlm.models import load_model
from adeptlm.runrecord import read_run
from conftest import run_adept
from test_dpo import PAIRS, margin, write_shapes

pytest.importorskip("trl", reason="adept orpo needs trl (pip install 'adeptlm[dpo]')")

COMMON = ["--max_steps", "16", "--learning_rate", "5e-3", "--lora_rank", "8", "--lora_alpha", "16",
          "--trainable", "q_proj,v_proj,o_proj,up_proj,down_proj", "--logging_steps", "1", "--report_to", "none",
          "--save_strategy", "no", "--max_length", "128", "--lora_dropout", "0"]


def check_trained(out, stage, tiny_model_dir):
    run = read_run(out)
    assert run["stage"] == stage and run["metrics"]["method"]["name"] == stage
    losses = [h["loss"] for h in run["metrics"]["loss_history"]]
    assert all(math.isfinite(x) for x in losses) and len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, losses        # falling
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names), names   # LoRA weights only
    assert not any(".ref." in n for n in names)                      # no reference copy saved
    base, tok = load_model(str(tiny_model_dir))
    tuned, _ = load_model(str(out))
    before = [margin(base, tok, *p) for p in PAIRS]
    after = [margin(tuned, tok, *p) for p in PAIRS]
    assert sum(after) > sum(before) + 1.0, (before, after)
    return run


def test_orpo_trains_from_pairs_without_a_reference(tmp_path, tiny_model_dir):
    data = tmp_path / "prefs"
    write_shapes(data)
    out = tmp_path / "orpo"
    rc = run_adept("orpo", "--model_name_or_path", str(tiny_model_dir), "--dataset_dir", str(data),
                   "--output_dir", str(out), "--per_device_train_batch_size", "2", "--beta", "0.2", *COMMON)
    assert rc.returncode == 0, rc.stderr[-3000:]
    assert "Traceback" not in rc.stderr and "trl.experimental" not in rc.stderr
    run = check_trained(out, "orpo", tiny_model_dir)
    assert run["metrics"]["method"]["beta"] == 0.2
    assert {"nll_loss", "log_odds_ratio", "rewards/accuracies"} <= set(run["metrics"]["method_history"][-1])
    assert run["data"]["train_pairs"] == 4
