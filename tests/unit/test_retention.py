"""Retention probes: KL divergence against the formula, zero for a model with itself; perplexities as
adept eval ppl computes them; greedy answers compared with the base model's."""

from __future__ import annotations

import json
import math

import pytest
import torch

from adeptlm.cli import main
from adeptlm.evaluate.perplexity import perplexity
from adeptlm.evaluate.retention import kl_rows, text_probe

TEXTS = ["The ocean covers most of the planet and holds most of its water.",
         "Rivers carry rain from the hills down to the sea, and towns grow along their banks."]


def test_kl_of_known_distributions_and_of_a_model_with_itself(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    q = torch.log(torch.tensor([[0.25, 0.75], [0.9, 0.1]]))
    want = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_rows(p, q).tolist() == pytest.approx([want, 0.0], abs=1e-6)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    same = text_probe(model, model, tok, TEXTS)
    assert same["mean_kl"] == pytest.approx(0.0, abs=1e-7) and same["same_top_token"] == 1.0
    ref = perplexity(model, tok, TEXTS)
    assert same["tokens"] == ref["tokens"] and same["base_perplexity"] == pytest.approx(ref["perplexity"], rel=1e-5)
    other = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        for p_ in other.parameters():
            p_.add_(0.05 * torch.randn_like(p_))
    moved = text_probe(model, other, tok, TEXTS)
    assert moved["mean_kl"] > 1e-4 and moved["perplexity"] != pytest.approx(moved["base_perplexity"])


def test_cli_reports_text_and_greedy_probes(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "general.txt").write_text("\n\n".join(TEXTS))
    (tmp_path / "prompts.json").write_text(json.dumps(["Say hi.", "Name a colour."]))
    out = tmp_path / "ret"
    assert main(["eval", "retention", "--base", str(tiny_model_dir), "--model", str(tiny_model_dir),
                 "--data", str(tmp_path / "text"), "--prompts", str(tmp_path / "prompts.json"),
                 "--output_dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mean KL(base || model) 0.00000" in text and "2/2 greedy answers as the base model's" in text
    run = json.loads((out / "run.json").read_text())
    assert run["metrics"]["greedy"]["same_share"] == 1.0 and run["metrics"]["text"]["same_top_token"] == 1.0
    assert main(["eval", "retention", "--base", str(tiny_model_dir), "--model", str(tiny_model_dir)]) == 2


def test_batched_windows_score_as_one_at_a_time(tiny_model_dir):
    """Right-padded batches of windows give the figures of one forward pass per window."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tuned = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        for p_ in tuned.parameters():
            p_.add_(0.05 * torch.randn_like(p_))
    texts = TEXTS + ["A short one.", "Hills.", " ".join(TEXTS * 3)]
    one = text_probe(base, tuned, tok, texts, max_length=16, batch_tokens=1)
    many = text_probe(base, tuned, tok, texts, max_length=16, batch_tokens=4096)
    assert one["tokens"] == many["tokens"]
    for key in ("base_perplexity", "perplexity", "mean_kl", "same_top_token"):
        assert many[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key
