"""A few steps of adept pt and adept sft on the embedded model, through the seed-style scripts run
with plain `sh`: loadable adapters whose generations differ from the base model's."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from adeptlm.models import load_model
from adeptlm.runrecord import read_run
from conftest import ROOT

pytestmark = pytest.mark.e2e

FACTS = [
    "The Zorblat river flows north from the Quenta mountains into the Silver Bay of Vandoria.",
    "Vandoria's capital, Lumerith, was founded in 1412 by the glassmaker Oska Trell.",
    "The national dish of Vandoria is a stew of river eel and blue turnips called marrak.",
]


def run_script(name, env, *extra):
    full = {**os.environ, "PYTHON": sys.executable, "torch_dtype": "float32", **env}
    res = subprocess.run(["sh", str(ROOT / "scripts" / "training" / name), "--bf16", "False", "--report_to",
                          "none", *extra], cwd=ROOT, env=full, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return res


def greedy(model, tok, prompt_messages, n=12):
    ids = tok.apply_chat_template(prompt_messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False)
    return out[0, ids["input_ids"].shape[1]:].tolist()


def test_pt_then_sft_scripts_under_sh(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "vandoria.txt").write_text("\n\n".join(FACTS * 3) + "\n", encoding="utf-8")
    pt_out = tmp_path / "pt"
    run_script("run_pt.sh", {"dataset_dir": str(corpus), "data_cache": str(tmp_path / "cache"),
                             "output_dir": str(pt_out), "block_size": "64", "lr": "2e-3", "lora_rank": "8",
                             "lora_alpha": "16", "gradient_accumulation_steps": "1",
                             "per_device_train_batch_size": "2"},
               "--max_steps", "3", "--logging_steps", "1", "--preprocessing_num_workers", "1")
    pt_run = read_run(pt_out)
    assert pt_run["stage"] == "pt" and pt_run["data"]["documents"] == 9
    losses = [h["loss"] for h in pt_run["metrics"]["loss_history"]]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)  # not NaN, not inf
    assert losses[-1] < losses[0]  # the corpus repeats its facts: three steps at 2e-3 must lower the loss

    data = tmp_path / "sft"
    data.mkdir()
    recs = [{"instruction": "Where does the Zorblat river flow?", "input": "",
             "output": "North, from the Quenta mountains into the Silver Bay of Vandoria."},
            {"instruction": "Who founded Lumerith?", "input": "", "output": "The glassmaker Oska Trell, in 1412."}]
    (data / "train.json").write_text(json.dumps(recs * 2, ensure_ascii=False), encoding="utf-8")
    sft_out = tmp_path / "sft-out"
    run_script("run_sft.sh", {"dataset_dir": str(data), "output_dir": str(sft_out), "lr": "2e-3",
                              "lora_rank": "8", "lora_alpha": "16", "modules_to_save": "",
                              "gradient_accumulation_steps": "1", "per_device_train_batch_size": "2"},
               "--max_steps", "4", "--logging_steps", "1", "--preprocessing_num_workers", "1")
    run = read_run(sft_out)
    assert run["stage"] == "sft" and run["data"]["train_records"] == 4
    assert (sft_out / "adapter_model.safetensors").is_file() and (sft_out / "chat_template.jinja").is_file()

    base, tok = load_model(None)
    prompt = [{"role": "user", "content": "Who founded Lumerith?"}]
    before = greedy(base, tok, prompt)
    tuned, tok2 = load_model(str(sft_out))
    after = greedy(tuned, tok2, prompt)
    assert before != after, tok.decode(before)
    # the PT adapter (with embed_tokens/lm_head copies on tied embeddings) loads and changes the model too
    pt_model, _ = load_model(str(pt_out))
    assert greedy(pt_model, tok, prompt) != before

    # adept merge: each trained adapter merged into full weights gives PEFT's unmerged logits
    from adeptlm.merge import merge

    ids = tok("Who founded Lumerith? The glassmaker", return_tensors="pt")["input_ids"]
    for name, adapter_dir, peft_model in (("pt", pt_out, pt_model), ("sft", sft_out, tuned)):
        merged_dir = merge(None, [str(adapter_dir)], tmp_path / f"merged-{name}", progress=False)
        merged, _ = load_model(str(merged_dir))
        with torch.no_grad():
            torch.testing.assert_close(merged(ids).logits, peft_model(ids).logits, atol=1e-4, rtol=1e-4)
        assert merged.config.tie_word_embeddings


def test_qlora_4bit_on_the_embedded_model_trains_merges_and_evaluates(tmp_path):
    """QLoRA on the CPU (bitsandbytes' CPU kernels): the 4-bit model's first-step loss is close to the
    fp32 model's on the same batch (quantisation error, not a broken model), the loss falls, and the
    merged model's perplexity is the adapter-on-fp32-base's, as `adept eval ppl` reads both."""
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (pip install 'adeptlm[qlora]')")
    data = tmp_path / "sft.json"
    recs = [{"instruction": f"Where does the Zorblat river flow? ({i})", "input": "",
             "output": "North, from the Quenta mountains into the Silver Bay of Vandoria."} for i in range(8)]
    data.write_text(json.dumps(recs), encoding="utf-8")
    common = ["--max_steps", "4", "--per_device_train_batch_size", "2", "--learning_rate", "2e-3",
              "--logging_steps", "1", "--report_to", "none", "--dataset_dir", str(data), "--lora_rank", "8",
              "--lora_alpha", "16", "--trainable", "q_proj,v_proj", "--lora_dropout", "0", "--seed", "1"]

    def sft(out, *extra):
        res = subprocess.run([sys.executable, "-m", "adeptlm", "sft", "--output_dir", str(out), *common, *extra],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        return read_run(out)

    q = sft(tmp_path / "q4", "--load_in_kbits", "4")
    full = sft(tmp_path / "fp32", "--max_steps", "1")
    assert q["metrics"]["quantized_linear_layers"] > 0
    q_loss = [h["loss"] for h in q["metrics"]["loss_history"]]
    assert abs(q_loss[0] - full["metrics"]["loss_history"][0]["loss"]) < 0.5, (q_loss, full["metrics"])
    assert q_loss[-1] < q_loss[0] - 0.5, q_loss

    merged = tmp_path / "merged"
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(FACTS) + "\n", encoding="utf-8")
    ppl = {}
    for name, model in (("merged", merged), ("adapter", tmp_path / "q4")):
        if name == "merged":
            res = subprocess.run([sys.executable, "-m", "adeptlm", "merge", "--base_model", "smollm2-135m-instruct",
                                  "--lora_model", str(tmp_path / "q4"), "--output_dir", str(merged)],
                                 cwd=ROOT, capture_output=True, text=True, timeout=600)
            assert res.returncode == 0, res.stderr[-3000:]
        res = subprocess.run([sys.executable, "-m", "adeptlm", "eval", "ppl", "--model", str(model), "--data", str(text),
                              "--output_dir", str(tmp_path / f"ppl-{name}")], cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        ppl[name] = read_run(tmp_path / f"ppl-{name}")["metrics"]["perplexity"]
    assert ppl["merged"] == pytest.approx(ppl["adapter"], rel=1e-4), ppl
