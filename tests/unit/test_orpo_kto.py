"""adept orpo and adept kto on a tiny model, the two methods the stage registry was proven with: each
trains (loss finite and falling, the chosen/desirable replies gaining on the others), saves only LoRA
weights, and records its method and settings in run.json; KTO's unpaired feedback is read in its own
shape and from a preference file (each pair split in two), and a bad label is one line naming file,
line and field."""

from __future__ import annotations

import json
import math

import pytest
from safetensors import safe_open

from adeptlm.data.feedback import read_feedback
from adeptlm.errors import InputError
from adeptlm.models import load_model
from adeptlm.runrecord import read_run
from conftest import run_adept
from test_dpo import PAIRS, margin, write_shapes

pytest.importorskip("trl", reason="adept orpo / kto need trl (pip install 'adeptlm[dpo]')")

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


def write_feedback(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_kto_trains_from_unpaired_feedback(tmp_path, tiny_model_dir):
    data = tmp_path / "feedback"
    data.mkdir()
    write_feedback(data / "own.jsonl", [{"prompt": p, "completion": c, "label": True} for p, c, _ in PAIRS[:2]]
                   + [{"prompt": [{"role": "user", "content": p}], "completion": r, "label": False}
                      for p, _, r in PAIRS[:2]])
    write_feedback(data / "pairs.jsonl", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS[2:]])
    out = tmp_path / "kto"
    rc = run_adept("kto", "--model_name_or_path", str(tiny_model_dir), "--dataset_dir", str(data),
                   "--output_dir", str(out), "--per_device_train_batch_size", "4", "--beta", "0.1",
                   "--desirable_weight", "1.0", "--undesirable_weight", "1.0", *COMMON)
    assert rc.returncode == 0, rc.stderr[-3000:]
    run = check_trained(out, "kto", tiny_model_dir)
    assert run["data"]["records"] == 8 and run["data"]["desirable"] == 4
    assert run["data"]["shapes"] == {"own.jsonl": "feedback", "pairs.jsonl": "pcr"}
    method = run["metrics"]["method"]
    assert method["beta"] == 0.1 and method["desirable_weight"] == 1.0 and method["loss_type"] == "kto"
    assert "kl" in run["metrics"]["method_history"][-1]


def test_feedback_reader_splits_pairs_and_names_a_bad_label(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    write_feedback(pairs, [{"prompt": "q", "chosen": "good", "rejected": "bad"}])
    shape, recs = read_feedback(pairs)
    assert shape == "pcr" and [(r.completion, r.desirable) for r in recs] == [("good", True), ("bad", False)]

    bad = tmp_path / "bad.jsonl"
    write_feedback(bad, [{"prompt": "q", "completion": "a", "label": True},
                         {"prompt": "q", "completion": "b", "label": "yes"}])
    with pytest.raises(InputError) as err:
        read_feedback(bad)
    assert f"{bad}:2" in str(err.value) and "label" in str(err.value)

    rc = run_adept("kto", "--model_name_or_path", "unused", "--dataset_dir", str(bad),
                   "--output_dir", str(tmp_path / "o"), "--report_to", "none")
    assert rc.returncode == 2 and f"{bad}:2" in rc.stderr and "label" in rc.stderr, rc.stderr
    assert len(rc.stderr.strip().splitlines()) == 1, rc.stderr
    assert not (tmp_path / "o").exists()
