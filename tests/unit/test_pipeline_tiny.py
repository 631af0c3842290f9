"""`adept run` on a tiny random model: a recipe's own further exams (here the real C-Eval slice) are
scored before and after and reported with their uncertainty; bundled recipes are chosen by name;
bad recipes (exams, subject, eval keys, stage flags, data files) stop with one line before anything runs."""

from __future__ import annotations

import json

import pytest

from adeptlm.cli import main
from adeptlm.errors import AdeptError
from adeptlm.evaluate.compare import paired_change, wilson
from adeptlm.pipeline import BUNDLED, load_recipe, recipe_path
from conftest import run_adept

def test_bundled_recipes_by_name_and_list(tmp_path):
    assert recipe_path(None) == BUNDLED["quenta-demo"][0]
    assert load_recipe(recipe_path("xilan-zh"), quick=False)["model"] == "gemma3-270m"
    with pytest.raises(AdeptError, match="not a bundled recipe"):
        recipe_path("no-such-recipe")
    r = run_adept("run", "--list")
    assert r.returncode == 0 and "quenta-demo" in r.stdout and "xilan-zh" in r.stdout


def test_bad_recipes_stop_with_one_line_before_any_stage(tmp_path, capsys):
    """An unknown or ill-typed eval: key, a bad stage flag, a flag the run sets, a bad data file: exit 2,
    one line naming the recipe file and key (or the data file, line and field), nothing written."""
    for body, expected in ((f"name: x\nexams: {{ceval: {tmp_path}/absent}}\n", "exams.ceval"),
                           ("name: x\nexams: [a]\n", "a mapping of name"),
                           ("name: x\ndata: {builtin: true, subject: mars}\n", "data.subject 'mars'"),
                           ("name: x\neval: {mode: letter, with_promt: true}\n", "r.yaml: eval.with_promt: not an exam"),
                           ("name: x\neval: {mode: guess}\n", "r.yaml: eval.mode: 'guess' is not one of letter"),
                           ("name: x\neval: {limit: many}\n", "r.yaml: eval.limit: 'many' is not a valid int"),
                           ("name: x\neval: {also: [cloze, guess]}\n", "r.yaml: eval.also: 'guess' is not one of letter"),
                           ("name: x\nsft: {learning_rat: 1.0e-4}\n", "r.yaml: sft.learning_rat: not a flag of `adept sft`"),
                           ("name: x\npt: {num_train_epochs: two}\n", "r.yaml: pt.num_train_epochs: 'two' is not a valid"),
                           ("name: x\nsft: {lr_scheduler_type: zigzag}\n", "r.yaml: sft.lr_scheduler_type: 'zigzag' is not"),
                           ("name: x\nsft: {output_dir: elsewhere}\n", "r.yaml: sft.output_dir: set by the recipe's run"),
                           ("name: x\nreplay: {distil: 1}\n", "r.yaml: replay.distil: not a replay setting"),
                           ("name: x\nreplay: {distill: lots}\n", "r.yaml: replay.distill: 'lots' is not a weight"),
                           ("name: x\nretention: {max_kll: 0.1}\n", "r.yaml: retention.max_kll: not a retention setting"),
                           ("name: x\ncontamination: {dorp: true}\n", "r.yaml: contamination.dorp: not a contamination"),
                           ("name: x\ncontamination: {drop: maybe}\n", "r.yaml: contamination: drop must be"),
                           (f"name: x\ndata: {{instructions: {tmp_path}/bad.json}}\nsft: {{max_seq_length: 64}}\n",
                            "bad.json:2: field 'output': expected a string, got int"),
                           ("name: x\nkto: {block_size: 64}\n", "r.yaml: kto.block_size: not a flag of `adept kto`"),
                           (f"name: x\ndata: {{builtin: true, feedback: {tmp_path}/fb.jsonl}}\nkto: {{beta: 0.1}}\n",
                            "fb.jsonl:1: field 'label': expected true or false")):
        (tmp_path / "fb.jsonl").write_text('{"prompt": "a", "completion": "b", "label": 1}\n')
        (tmp_path / "bad.json").write_text('[{"instruction": "a", "output": "b"},\n'
                                           ' {"instruction": "c",\n  "output": 3}]\n')
        recipe = tmp_path / "r.yaml"
        recipe.write_text(body)
        code = main(["run", str(recipe), "--output_dir", str(tmp_path / "runs")])  # in-process: fast
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and expected in lines[0], lines
        assert not (tmp_path / "runs").exists()


def test_paired_change_counts_flips(tmp_path):
    for side, marks in (("before", "1100110000"), ("after", "1011111000")):
        (tmp_path / side / "take0").mkdir(parents=True)
        rows = "id,correctness\n" + "".join(f"{i},{m}\n" for i, m in enumerate(marks))
        (tmp_path / side / "take0" / "s_val.csv").write_text(rows)
    c = paired_change(tmp_path / "before", tmp_path / "after")
    assert (c["questions"], c["right_to_wrong"], c["wrong_to_right"]) == (10, 1, 3)
    assert c["before"] == 40.0 and c["after"] == 60.0 and c["change"] == 20.0
    # paired standard error: sqrt(b + c - (c - b)^2 / n) / n = sqrt(4 - 0.4) / 10
    assert c["change_se"] == pytest.approx(100 * (3.6 ** 0.5) / 10)
    assert c["p_value"] == pytest.approx(0.625)  # exact McNemar, b=1 c=3: 2 * (1 + 4) / 16
    assert [(f["id"], f["direction"]) for f in c["flips"]] == [("1", "right_to_wrong"), ("2", "wrong_to_right"),
                                                                ("3", "wrong_to_right"), ("6", "wrong_to_right")]
    lo, hi = wilson(4, 10)
    assert lo < 40 < hi and lo == pytest.approx(16.82, abs=0.01) and hi == pytest.approx(68.73, abs=0.01)


def test_exact_mcnemar_against_hand_computed_values():
    from adeptlm.evaluate.compare import mcnemar_exact

    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)                    # 2 * 0.5^5
    assert mcnemar_exact(1, 9) == mcnemar_exact(9, 1) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(3, 3) == 1.0                                      # 2 * 42/64 capped at 1
    assert mcnemar_exact(2, 12) == pytest.approx(2 * (1 + 14 + 91) / 2 ** 14)


def test_recipe_exams_scored_before_and_after(tmp_path, tiny_model_dir, shared_data):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (the run's export check needs it)")
    recipe = tmp_path / "tiny.yaml"
    prefs = tmp_path / "prefs.jsonl"   # the bundled subject has none: the recipe brings its own for orpo
    prefs.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": "No."}) + "\n"
                             for i in range(4)))
    recipe.write_text(f"""name: tiny
model: {tiny_model_dir}
data: {{builtin: true, seed: 7, preferences: {prefs}}}
exams: {{ceval: {shared_data / 'ceval'}}}
contamination: {{drop: true}}
eval: {{mode: letter, also: cloze, with_prompt: false, few_shot: false, limit: 3}}
pt: {{max_steps: 2, per_device_train_batch_size: 2, block_size: 32, lora_rank: 4, lora_alpha: 8, report_to: none,
      save_steps: 10, logging_steps: 1}}
sft: {{max_steps: 2, per_device_train_batch_size: 2, max_seq_length: 64, report_to: none, save_steps: 10,
       logging_steps: 1}}
orpo: {{max_steps: 2, per_device_train_batch_size: 2, max_length: 64, beta: 0.2, report_to: none, save_steps: 10,
        logging_steps: 1}}
export: {{outtype: f32, check_tokens: 2}}
""")
    r = run_adept("run", str(recipe), "--output_dir", str(tmp_path / "runs"), cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    root = tmp_path / "runs" / "tiny"
    # the registry's stages chain: orpo continued the sft adapter, which continued pt's
    orpo = json.loads((root / "orpo" / "run.json").read_text())
    assert orpo["config"]["peft_path"] == str(root / "sft") and orpo["metrics"]["method"]["beta"] == 0.2
    for stage in ("baseline", "after"):
        metrics = json.loads((root / stage / "run.json").read_text())["metrics"]
        assert set(metrics) >= {"exam", "general_exam", "ceval"}
        assert (root / stage / "ceval" / "take0").is_dir()
        # eval.also: each exam scored in cloze beside the letter headline, in <exam>/cloze
        assert set(metrics["exam_also"]) == {"cloze"} and (root / stage / "exam" / "cloze" / "take0").is_dir()
    report = (root / "report.md").read_text(encoding="utf-8")
    rows = [x for x in report.splitlines() if x.startswith(("| Subject exam | letter", "| Subject exam | cloze"))]
    assert [r.split("|")[2].strip() for r in rows] == ["letter **read**", "cloze (acc_norm)"], rows
    assert "the headline reads the recipe's own protocol (letter)" in report
    assert "## ceval (forgetting, your exam)" in report
    line = next(x for x in report.splitlines() if x.startswith("- ceval:"))
    assert "95% interval" in line and "over 12 questions" in line  # 4 subjects x limit 3
    assert "exact McNemar p = " in line
    # position bias: the predicted letters before and after beside the gold ones, per exam
    summary = json.loads((root / "after" / "ceval" / "summary.json").read_text())
    letters = summary["All"]["letters"]
    assert sum(letters["gold"].values()) == 12 and sum(letters["predicted"].values()) + letters["unanswered"] == 12
    assert "## Position bias" in report and "| ceval |" in report
    # every question that changed is in flips-<exam>.csv, with the question text
    c = paired_change(root / "baseline" / "ceval", root / "after" / "ceval")
    flips = (root / "flips-ceval.csv").read_text(encoding="utf-8").splitlines()
    assert len(flips) == 1 + c["right_to_wrong"] + c["wrong_to_right"]
    assert "<h2>Position bias</h2>" in (root / "report.html").read_text(encoding="utf-8")
    # the exams were checked against the training data before training
    cont = json.loads((root / "contamination" / "run.json").read_text())["metrics"]
    assert set(cont) == {"exam", "general_exam", "ceval"} and cont["ceval"]["checked"] > 0
    assert "## Contamination" in report and "- ceval: 0 of" in report
    # contamination: {drop: true}: every exam stage is handed its list of contaminated items to leave out
    assert "left out of every exam score" in report
    for stage in ("baseline", "after"):
        used = json.loads((root / stage / "ceval" / "eval-config.json").read_text())["exclude"]
        assert used == str(root / "contamination" / "items-ceval.json")
    # retention against the base model, on text and prompts made from the general exam
    ret = json.loads((root / "retention" / "run.json").read_text())["metrics"]
    assert ret["text"]["tokens"] > 0 and ret["greedy"]["prompts"] == 24
    assert "## Retention (against the base model)" in report and "- Retention: mean KL" in report
    assert "orpo 4 preference pairs (prefs.jsonl)" in report and "orpo (beta 0.2, learning_rate 8e-06)" in report

    # `adept report` from its command line rebuilds the same report from the run's outputs
    (root / "report.md").unlink()
    (root / "report.html").unlink()
    r = run_adept("report", str(root), cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (root / "report.md").read_text(encoding="utf-8") == report
    assert "<h2>Position bias</h2>" in (root / "report.html").read_text(encoding="utf-8")

    # `adept eval compare` from its command line: before, after and change per subject and in all,
    # as the two summaries say
    r = run_adept("eval", "compare", str(root / "baseline" / "ceval"), str(root / "after" / "ceval"),
                  "--output_dir", str(tmp_path / "cmp"), cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    before = json.loads((root / "baseline" / "ceval" / "summary.json").read_text())["All"]["score"]
    after = json.loads((root / "after" / "ceval" / "summary.json").read_text())["All"]["score"]
    row = next(x for x in r.stdout.splitlines() if x.startswith("| **All** |"))
    assert row == f"| **All** | 12 | {before:.2f} | {after:.2f} | {round(after - before, 2):+.2f} |"
    assert (tmp_path / "cmp" / "compare.md").read_text(encoding="utf-8").startswith("| | questions |")
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0


def test_mix_draws_general_instructions_into_sft_at_the_ratio(tmp_path, shared_data):
    """`mix: {data, ratio, seed}`: round(ratio x subject records) records of the general set, drawn
    without replacement and the same for the same seed, beside the subject's own and the replay."""
    from adeptlm.data.instructions import read_instructions
    from adeptlm.pipeline import Run

    source = shared_data / "instructions" / "alpaca_zh_demo.json"
    inst = tmp_path / "inst.json"
    inst.write_text(json.dumps([{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(40)]))
    (tmp_path / "r" / "replay").mkdir(parents=True)
    (tmp_path / "r" / "replay" / "general_replay.json").write_text('[{"instruction": "hi", "output": "hello"}]')

    def mixed(seed):
        recipe = {"name": "m", "data": {"instructions": str(inst)}, "replay": {"limit": 1}, "sft": {},
                  "mix": {"data": str(source), "ratio": 0.5, "seed": seed}}
        out = Run(recipe, tmp_path / "r").sft_data()
        assert sorted(p.name for p in out.iterdir()) == ["general_replay.json", "inst.json", "mix-alpaca_zh_demo.jsonl"]
        return [json.loads(x) for x in (out / "mix-alpaca_zh_demo.jsonl").read_text().splitlines()]

    a, b, c = mixed(0), mixed(0), mixed(1)
    assert len(a) == 20 and a == b != c
    originals = [json.dumps(r, sort_keys=True) for r in json.loads(source.read_text(encoding="utf-8"))]
    assert len({json.dumps(r, sort_keys=True) for r in a}) == 20
    assert all(json.dumps(r, sort_keys=True) in originals for r in a)
    read_instructions(tmp_path / "r" / "sft-data" / "mix-alpaca_zh_demo.jsonl")   # reads as instruction data


def test_bad_mix_is_one_line(tmp_path, capsys):
    for body, expected in (("name: x\nmix: {data: absent.json}\n", "mix.data: absent.json is not a file"),
                           ("name: x\nmix: {data: r.yaml, ratio: lots}\n", "mix: ratio must be a number"),
                           ("name: x\nmix: {data: r.yaml, rate: 1}\n", "mix.rate: not a mix setting")):
        recipe = tmp_path / "r.yaml"
        recipe.write_text(body)
        code = main(["run", str(recipe), "--output_dir", str(tmp_path / "runs")])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and expected in lines[0], lines
