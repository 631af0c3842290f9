"""adept dpo on a tiny model: the policy's log-probability margin of chosen over rejected rises and
the logged reward accuracy is above 0.5; every preference shape is read; bad data is one line."""

from __future__ import annotations

import json

import pytest
import torch

from adeptlm.models import load_model
from adeptlm.runrecord import read_run
from conftest import run_adept

pytest.importorskip("trl", reason="adept dpo needs trl (pip install 'adeptlm[dpo]')")

PAIRS = [
    ("What is two plus two?", "Two plus two is four.", "Hello world, hello there!"),
    ("Say hello.", "Hello world, hello there!", "The quick brown fox jumps over the lazy dog."),
    ("Describe a fox.", "The quick brown fox jumps over the lazy dog.", "0123456789 + - * / = ( )"),
    ("你好", "你好，世界。这是一个测试。", "You are a helpful assistant."),
]


def margin(model, tok, prompt, chosen, rejected) -> float:
    def logp(reply):
        msgs = [{"role": "user", "content": prompt}]
        p = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": reply}], tokenize=True,
                                       return_dict=True)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([full])).logits[0, :-1].float(), -1)
        idx = torch.arange(len(p) - 1, len(full) - 1)
        return lp[idx, torch.tensor(full[len(p):])].sum().item()
    return logp(chosen) - logp(rejected)


def write_shapes(d):
    d.mkdir()
    (d / "pcr.jsonl").write_text("\n".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}, ensure_ascii=False)
                                           for p, c, r in PAIRS[:2]) + "\n", encoding="utf-8")
    (d / "sharegpt.json").write_text(json.dumps([{"conversations": [{"from": "human", "value": PAIRS[2][0]}],
                                                  "chosen": {"from": "gpt", "value": PAIRS[2][1]},
                                                  "rejected": {"from": "gpt", "value": PAIRS[2][2]}}],
                                                ensure_ascii=False), encoding="utf-8")
    (d / "emoji.jsonl").write_text(json.dumps({"question": PAIRS[3][0], "answer_zh": PAIRS[3][1],
                                               "answer_en": PAIRS[3][2]}, ensure_ascii=False) + "\n",
                                   encoding="utf-8")


def test_dpo_raises_the_margin_and_reward_accuracy(tmp_path, tiny_model_dir):
    data = tmp_path / "prefs"
    write_shapes(data)
    out = tmp_path / "dpo"
    rc = run_adept("dpo", "--model_name_or_path", str(tiny_model_dir), "--dataset_dir", str(data),
                   "--output_dir", str(out), "--max_steps", "12", "--learning_rate", "5e-3",
                   "--per_device_train_batch_size", "2", "--lora_rank", "8", "--lora_alpha", "16",
                   "--trainable", "q_proj,v_proj,o_proj,up_proj,down_proj", "--logging_steps", "1",
                   "--report_to", "none", "--beta", "0.1", "--save_strategy", "no", "--max_length", "128")
    assert rc.returncode == 0, rc.stderr[-3000:]
    run = read_run(out)
    assert run["stage"] == "dpo" and run["data"]["train_pairs"] == 4
    assert set(run["data"]["shapes"].values()) == {"pcr", "sharegpt", "emoji"}
    assert run["metrics"]["rewards_accuracies"] > 0.5, run["metrics"]["method_history"]
    assert (out / "adapter_model.safetensors").is_file()

    base, tok = load_model(str(tiny_model_dir))
    tuned, _ = load_model(str(out))
    before = [margin(base, tok, *p) for p in PAIRS]
    after = [margin(tuned, tok, *p) for p in PAIRS]
    assert sum(after) > sum(before) + 1.0, (before, after)
    assert sum(a > b for a, b in zip(after, before)) >= 3, (before, after)


def test_dpo_bad_records_and_long_prompts(tmp_path, tiny_model_dir):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"prompt": "x", "chosen": "y", "rejected": "z"}) + "\n"
                    + json.dumps({"prompt": "x", "chosen": 3, "rejected": "z"}) + "\n")
    rc = run_adept("dpo", "--model_name_or_path", str(tiny_model_dir), "--dataset_dir", str(data),
                   "--output_dir", str(tmp_path / "o"), "--max_steps", "1", "--report_to", "none")
    assert rc.returncode == 2 and f"{data}:2" in rc.stderr and "chosen" in rc.stderr
    assert len(rc.stderr.strip().splitlines()) == 1, rc.stderr

    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "What is two plus two? " * 20, "chosen": "four", "rejected": "five"}) + "\n")
    rc = run_adept("dpo", "--model_name_or_path", str(tiny_model_dir), "--dataset_dir", str(good),
                   "--output_dir", str(tmp_path / "o"), "--max_steps", "1", "--report_to", "none",
                   "--max_prompt_length", "16")
    assert rc.returncode == 2 and "--max_prompt_length" in rc.stderr, rc.stderr


def test_dpo_after_sft_is_anchored_to_the_sft_policy(tmp_path, tiny_model_dir):
    """With --peft_path, the reference is the SFT adapter as loaded (TRL 1.16 keeps a frozen copy of it
    as adapter "ref"), not the base with the adapter switched off. Before the first update the policy
    is that same SFT model, so the first step's rewards, beta * (policy - reference) log-probability,
    are zero; had the reference been the base they would be beta times the SFT shift, which this SFT
    adapter makes far from zero."""
    from peft import LoraConfig, PeftModel, get_peft_model

    base, tok = load_model(str(tiny_model_dir))
    sft = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.0,
                                          target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    sft.save_pretrained(tmp_path / "sft")
    tok.save_pretrained(tmp_path / "sft")
    plain, _ = load_model(str(tiny_model_dir))
    with_sft = PeftModel.from_pretrained(load_model(str(tiny_model_dir))[0], str(tmp_path / "sft")).eval()
    shift = [margin(with_sft, tok, *p) - margin(plain, tok, *p) for p in PAIRS]
    assert max(abs(s) for s in shift) > 1.0, shift        # the SFT adapter moved the model

    data = tmp_path / "prefs"
    write_shapes(data)
    out = tmp_path / "dpo"
    rc = run_adept("dpo", "--model_name_or_path", str(tiny_model_dir), "--peft_path", str(tmp_path / "sft"),
                   "--dataset_dir", str(data), "--output_dir", str(out), "--max_steps", "2",
                   "--learning_rate", "5e-3", "--per_device_train_batch_size", "4", "--logging_steps", "1",
                   "--report_to", "none", "--beta", "0.1", "--save_strategy", "no", "--max_length", "128")
    assert rc.returncode == 0, rc.stderr[-3000:]
    history = read_run(out)["metrics"]["method_history"]
    first, second = history[0], history[1]
    assert first["step"] == 1
    assert abs(first["rewards/chosen"]) < 1e-5 and abs(first["rewards/rejected"]) < 1e-5, history
    assert abs(second["rewards/margins"]) > 1e-4, history  # the policy moved away from its fixed reference
    assert not (out / "ref").exists()                      # the reference copy is not saved with the result
