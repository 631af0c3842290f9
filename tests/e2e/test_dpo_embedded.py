"""adept dpo on the embedded model with each preference shape, then merge and GGUF export of the result:
the preference margins grow once the pairs have been seen, and the GGUF answers as the merged model does."""

from __future__ import annotations

import json

import pytest

from adeptlm.runrecord import read_run
from conftest import run_adept

pytestmark = pytest.mark.e2e
pytest.importorskip("trl")


def test_dpo_then_merge_then_gguf(tmp_path, shared_data):
    data = tmp_path / "prefs"
    data.mkdir()
    demo = json.loads((shared_data / "preferences" / "dpo_zh_demo.json").read_text(encoding="utf-8"))
    short = [r for r in demo if len(r["conversations"][-1]["value"]) < 60][:2]
    (data / "sharegpt.json").write_text(json.dumps(short, ensure_ascii=False), encoding="utf-8")
    (data / "emoji.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"question": "用一句话介绍长城。", "answer_zh": "长城是中国古代修建的军事防御工程🏯。",
         "answer_en": "The Great Wall is an ancient Chinese defence work."},
        {"question": "今天天气怎么样？", "answer_zh": "今天阳光明媚☀️，适合出门。", "answer_en": "It is sunny today."},
    ]) + "\n", encoding="utf-8")
    (data / "pcr.jsonl").write_text(json.dumps({"prompt": "Name a fruit.", "chosen": "An apple 🍎.",
                                                "rejected": "I cannot answer that."}) + "\n", encoding="utf-8")
    out = tmp_path / "dpo"
    # two epochs of the five pairs, one pair a step: the second epoch's margins are measured on pairs the
    # policy has already been pushed towards
    rc = run_adept("dpo", "--dataset_dir", str(data), "--output_dir", str(out), "--max_steps", "10",
                   "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1",
                   "--learning_rate", "5e-4", "--lora_rank", "8", "--lora_alpha", "16", "--trainable",
                   "q_proj,v_proj", "--logging_steps", "1", "--report_to", "none", "--save_strategy", "no",
                   "--max_length", "256", "--max_prompt_length", "128", "--loss_type", "sigmoid")
    assert rc.returncode == 0, rc.stderr[-3000:]
    run = read_run(out)
    assert run["data"]["train_pairs"] == 5 and set(run["data"]["shapes"].values()) == {"pcr", "sharegpt", "emoji"}
    history = run["metrics"]["method_history"]
    assert [h["step"] for h in history] == list(range(1, 11))
    assert history[0]["rewards/margins"] == 0.0             # the policy starts as its reference
    first, second = ([h["rewards/margins"] for h in history[k:k + 5]] for k in (0, 5))
    assert sum(second) / 5 > max(0.0, sum(first) / 5), (first, second)

    merged = tmp_path / "merged"
    rc = run_adept("merge", "--lora_model", str(out), "--output_dir", str(merged))
    assert rc.returncode == 0, rc.stderr[-2000:]
    gguf_file = tmp_path / "dpo-f16.gguf"
    rc = run_adept("export", "gguf", "--model", str(merged), "--outtype", "f16", "--output", str(gguf_file))
    assert rc.returncode == 0, rc.stderr[-2000:]
    pytest.importorskip("llama_cpp")
    from adeptlm.backends import chat_greedy

    prompts = ["Name a fruit.", "用一句话介绍长城。"]
    merged_answers = chat_greedy(str(merged), prompts, 12)
    assert all(a.strip() for a in merged_answers)
    assert chat_greedy(str(gguf_file), prompts, 12) == merged_answers     # f16: the same greedy path
