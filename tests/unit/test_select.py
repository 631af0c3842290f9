"""`adept select` on a tiny model: α = 0 is the base and α = 1 the merged adapter; a merge at α
equals PEFT's merge of the adapter scaled by α; the choice follows the selection exam and the probes
alone (a difference planted in the reported exam changes nothing); a budget no candidate meets
gives one line and a report naming the failed budget."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from peft import PeftModel
from peft.helpers import rescale_adapter_scale
from transformers import AutoModelForCausalLM

from adeptlm.errors import AdeptError
from adeptlm.merge import merge
from adeptlm.select import Budget, Candidate, MergedWeights, activated, candidates, checkpoints_of, choose, load_candidates
from test_merge import INPUT, make_adapter


@pytest.fixture
def base_and_adapter(tiny_model_dir, tmp_path):
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=3)
    return tiny_model_dir, adapter


def logits_of(path):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        return model(INPUT).logits


def test_alpha_zero_is_the_base_and_one_the_merged_adapter(base_and_adapter, tmp_path):
    base, adapter = base_and_adapter
    cands = [Candidate("a0", str(adapter), 0.0), Candidate("a1", str(adapter), 1.0)]
    model, _, names = load_candidates(str(base), cands)
    with torch.no_grad():
        with activated(model, names, cands[0]):
            zero = model(INPUT).logits
        with activated(model, names, cands[1]):
            one = model(INPUT).logits
    merge(str(base), [str(adapter)], tmp_path / "merged", progress=False)
    torch.testing.assert_close(zero, logits_of(base), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one, logits_of(tmp_path / "merged"), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(zero, one, atol=1e-3)  # the adapter does change the model


def test_merged_candidate_equals_the_scaled_adapter_and_restores_the_base(base_and_adapter, tmp_path):
    """The exams score a candidate on W0 + α·ΔW written into the base layers: its logits are the
    unmerged adapter's at that scale (1e-5), and afterwards the base weights are bit for bit the base's."""
    base, adapter = base_and_adapter
    cands = [Candidate("a05", str(adapter), 0.5), Candidate("a1", str(adapter), 1.0)]
    model, _, names = load_candidates(str(base), cands)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merged = MergedWeights(model)
    assert merged.applies(names[str(adapter)], adapter)
    with torch.no_grad():
        for c in cands:
            with activated(model, names, c):
                want = model(INPUT).logits
            with merged.candidate(names[c.adapter], c.alpha):
                got = model(INPUT).logits
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        with model.disable_adapter():
            torch.testing.assert_close(model(INPUT).logits, logits_of(base), atol=0, rtol=0)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_merge_at_alpha_equals_peft_merge_of_the_scaled_adapter(base_and_adapter, tmp_path):
    base, adapter = base_and_adapter
    merge(str(base), [str(adapter)], tmp_path / "half", progress=False, alpha=0.5)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    with rescale_adapter_scale(peft, 0.5):
        merged = peft.merge_and_unload()
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "half", dtype=torch.float32).state_dict()
    for name, tensor in merged.state_dict().items():
        torch.testing.assert_close(ours[name], tensor, atol=1e-6, rtol=1e-5)
    with pytest.raises(AdeptError, match="lies in"):
        merge(str(base), [str(adapter)], tmp_path / "bad", progress=False, alpha=1.5)


def test_merge_at_alpha_zero_is_the_base_even_with_saved_modules(tiny_model_dir, tmp_path):
    # a modules_to_save copy is not a LoRA update: scaling cannot remove it, so α = 0 must drop the adapter
    adapter = make_adapter(tiny_model_dir, tmp_path / "saves", seed=4, modules_to_save=["lm_head"])
    merge(str(tiny_model_dir), [str(adapter)], tmp_path / "zero", progress=False, alpha=0.0)
    torch.testing.assert_close(logits_of(tmp_path / "zero"), logits_of(tiny_model_dir), atol=1e-6, rtol=1e-6)
    with pytest.raises(AdeptError, match="whole modules"):
        merge(str(tiny_model_dir), [str(adapter)], tmp_path / "half", progress=False, alpha=0.5)


def test_candidates_and_checkpoints(base_and_adapter, tmp_path):
    _, adapter = base_and_adapter
    for step in (10, 20, 30, 40, 50):
        shutil.copytree(adapter, adapter / f"checkpoint-{step}", ignore=shutil.ignore_patterns("checkpoint-*"))
    # the last checkpoint is the adapter itself; two of the others, spread over training
    assert [s for s, _ in checkpoints_of(adapter, 2)] == [10, 30]
    assert [s for s, _ in checkpoints_of(adapter, 9)] == [10, 20, 30, 40]
    assert checkpoints_of(adapter, 0) == []
    cands, notes = candidates(adapter, [0.5, 1.0], 1)
    assert [c.alpha for c in cands] == [0.0, 0.5, 1.0, 1.0] and cands[-1].step == 20 and not notes


def test_choose_inside_the_budget_and_outside_it():
    rows = [{"name": "a0", "alpha": 0.0, "gain": 0.0, "mean_kl": 0.0, "same_share": 1.0, "general_change": 0.0},
            {"name": "a5", "alpha": 0.5, "gain": 30.0, "mean_kl": 0.2, "same_share": 0.6, "general_change": -1.0},
            {"name": "a1", "alpha": 1.0, "gain": 60.0, "mean_kl": 1.5, "same_share": 0.1, "general_change": -9.0}]
    assert choose(rows, Budget()) == (2, [])                       # no budget: the largest gain
    assert choose(rows, Budget(max_kl=0.3)) == (1, [])             # the largest gain inside it
    assert choose(rows, Budget(max_general_drop=0.5)) == (0, [])
    assert choose(rows, Budget(min_same_answers=0.5, max_kl=1.0)) == (1, [])
    # nothing fits a budget below the base's own: the least forgetting, and the bound it breaks
    rows[0]["mean_kl"] = 0.05
    idx, failed = choose(rows, Budget(max_kl=0.01))
    assert idx == 0 and failed == ["max_kl (0.050 > 0.01)"]


def _exam(root, rows, name="quiz"):
    (root / "val").mkdir(parents=True)
    lines = ["id,question,A,B,C,D,answer"] + [",".join([str(i), *r]) for i, r in enumerate(rows)]
    (root / "val" / f"{name}_val.csv").write_text("\n".join(lines) + "\n")
    (root / "subject_mapping.json").write_text(json.dumps({name: [name, name, "STEM"]}))
    return root


QUESTIONS = [["What is the capital of the tiny land?", "red", "blue", "green", "gold", "A"],
             ["Which river is the longest here?", "one", "two", "three", "four", "B"],
             ["Who founded the first town?", "cat", "dog", "owl", "fox", "C"],
             ["What do they export?", "salt", "tea", "wool", "tin", "D"]]


def _run(tmp_path, base, adapter, reported_answers: str, select_cfg: dict):
    """An `adept run` directory with a trained sft adapter, and its selection stage alone."""
    from adeptlm.pipeline import Run

    root = tmp_path / f"run-{reported_answers}"
    shutil.copytree(adapter, root / "sft")
    shutil.copytree(adapter, root / "sft" / "checkpoint-2", ignore=shutil.ignore_patterns("checkpoint-*"))
    shutil.copytree(adapter, root / "sft" / "checkpoint-4", ignore=shutil.ignore_patterns("checkpoint-*"))
    reported = [q[:-1] + [a] for q, a in zip(QUESTIONS, reported_answers)]
    data = {"exam": str(_exam(root / "exam", reported)), "select_exam": str(_exam(root / "select", QUESTIONS)),
            "general_exam": str(_exam(root / "general", QUESTIONS[::-1], "general"))}
    recipe = {"name": "t", "model": str(base), "data": data, "sft": {"max_seq_length": 64},
              "eval": {"mode": "cloze", "few_shot": False, "with_prompt": True}, "select": select_cfg,
              "retention": {"prompts_limit": 3}}
    run = Run(recipe, root)
    run.stage_select()
    return json.loads((root / "select" / "run.json").read_text())


def test_selection_ignores_the_reported_exam(base_and_adapter, tmp_path):
    base, adapter = base_and_adapter
    cfg = {"alphas": [0, 0.5, 1], "checkpoints": 1, "kl_tokens": 64, "max_new_tokens": 4}
    a = _run(tmp_path, base, adapter, "ABCD", cfg)["metrics"]
    b = _run(tmp_path, base, adapter, "DCBA", cfg)["metrics"]   # every reported answer changed
    assert [c["name"] for c in a["candidates"]] == ["alpha=0.00", "alpha=0.50", "alpha=1.00", "checkpoint-2"]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "adapter")} for r in rows]  # noqa: E731
    assert strip(a["candidates"]) == strip(b["candidates"]) and a["chosen"] == b["chosen"]
    base_row = a["candidates"][0]
    assert base_row["mean_kl"] == pytest.approx(0.0, abs=1e-6) and base_row["same_share"] == 1.0
    assert all("mean_kl" in r and "general_exam" in r for r in a["candidates"])


def test_a_budget_no_candidate_meets(base_and_adapter, tmp_path, capsys):
    from adeptlm.evaluate.report import select_md

    base, adapter = base_and_adapter
    run = _run(tmp_path, base, adapter, "ABCD", {"alphas": [0, 1], "checkpoints": 0, "kl_tokens": 64,
                                                 "max_new_tokens": 4, "min_same_answers": 1.01})
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "no candidate fits" in ln]
    assert len(lines) == 1 and "min_same_answers" in lines[0]
    m = run["metrics"]
    assert m["chosen"] == "alpha=0.00" and m["failed_budget"][0].startswith("min_same_answers")
    md = "\n".join(select_md(tmp_path / "run-ABCD"))
    assert "No candidate met the budget" in md and "breaks min_same_answers (1.00 < 1.01)" in md


def test_adept_select_command(base_and_adapter, tmp_path, capsys):
    from adeptlm.cli import main

    base, adapter = base_and_adapter
    select = _exam(tmp_path / "select", QUESTIONS)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(["Say hello.", "Name a colour."]))
    code = main(["select", "--model", str(base), "--lora_model", str(adapter), "--data_dir", str(select),
                 "--mode", "letter", "--few_shot", "False", "--prompts", str(prompts), "--alphas", "0.5,1",
                 "--answer_tokens", "4", "--output_dir", str(tmp_path / "out"), "--max_kl", "100"])
    out = capsys.readouterr().out
    assert code == 0 and "adept merge --lora_model" in out
    m = json.loads((tmp_path / "out" / "run.json").read_text())["metrics"]
    assert [c["alpha"] for c in m["candidates"]] == [0.0, 0.5, 1.0] and m["budget"] == {"max_kl": 100.0}
    assert all("mean_kl" not in c and c["prompts"] == 2 for c in m["candidates"])   # no --text: no KL probe
    assert main(["select", "--model", str(base), "--lora_model", str(adapter), "--data_dir", str(select),
                 "--mode", "both", "--output_dir", str(tmp_path / "o2")]) == 2


def test_kept_answers_agree_with_greedy_decoding(base_and_adapter):
    """The teacher-forced check says 'kept' exactly where greedy decoding writes the base's answer again."""
    from adeptlm.backends import HFBackend
    from adeptlm.select import kept_answers

    base, adapter = base_and_adapter
    cands = [Candidate(f"a{a}", str(adapter), a) for a in (0.0, 0.1, 0.3, 1.0)]
    model, tok, names = load_candidates(str(base), cands)
    backend = HFBackend(model, tok)
    prompts = [backend.chat_prompt([{"role": "user", "content": p}])
               for p in ("Say hello.", "What is two plus two?", "Name a colour.", "Who are you?", "Pick a word")]
    with torch.inference_mode(), model.disable_adapter():
        base_answers = backend.generate(prompts, 6, backend.stop_ids)
    seen = []
    for c in cands:
        with activated(model, names, c), torch.inference_mode():
            greedy = backend.generate(prompts, 6, backend.stop_ids)
            kept = kept_answers(model, backend.pad_id, prompts, base_answers, 6, backend.stop_ids, batch_size=2)
        assert kept == [g == b for g, b in zip(greedy, base_answers)], c.name
        seen += kept
    assert True in seen and False in seen          # both outcomes were exercised
