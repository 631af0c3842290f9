"""The exam contamination check finds a planted overlap (Chinese by characters, English by words, and
a short item whole) and nothing in a clean pair; the real C-Eval slice against the real instruction
sets in ../shared/data is clean."""

from __future__ import annotations

import json

import pytest

from adeptlm.cli import main
from adeptlm.data.contamination import find_overlaps, tokens

HEADER = "id,question,A,B,C,D,answer\n"


def _exam(root, rows):
    (root / "val").mkdir(parents=True)
    (root / "val" / "demo_val.csv").write_text(HEADER + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    return root


def test_tokens_are_words_and_single_cjk_characters():
    assert tokens("The Capital, of FRANCE: 北京是首都！") == ["the", "capital", "of", "france", "北", "京", "是", "首", "都"]


def test_a_planted_overlap_is_found_and_a_clean_pair_is_not(tmp_path, capsys):
    exam = _exam(tmp_path / "exam", [
        ("0", "下列哪一项是光合作用所需要的主要能量来源", "月光", "阳光", "地热", "风", "B"),
        ("1", "Which gas do green plants take in from the air during photosynthesis", "oxygen",
         "carbon dioxide", "helium", "neon", "B"),
        ("2", "Name the red planet", "Venus", "Mars", "Jupiter", "Saturn", "B"),
        ("3", "水在标准大气压下的沸点是多少摄氏度", "50", "100", "0", "80", "B"),
    ])
    leaked = [{"instruction": "请回答：下列哪一项是光合作用所需要的主要能量来源？", "input": "", "output": "阳光。"},
              {"instruction": "Explain", "input": "", "output": "Which gas do green plants take in from the air "
                                                               "during photosynthesis? Carbon dioxide, of course."},
              {"instruction": "Quiz: name the red planet. Mars!", "input": "", "output": "ok"}]
    train = tmp_path / "train.json"
    train.write_text(json.dumps(leaked, ensure_ascii=False), encoding="utf-8")
    found, checked = find_overlaps(exam, [train])
    assert checked == 4 and sorted(o.id for o in found) == ["0", "1", "2"]
    assert all(o.source.startswith(str(train)) for o in found)
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps([{"instruction": "光合作用是什么？", "input": "", "output": "植物利用阳光制造养分的过程。"},
                                 {"instruction": "Name a planet", "input": "", "output": "Mars is red."}],
                                ensure_ascii=False), encoding="utf-8")
    assert find_overlaps(exam, [clean]) == ([], 4)
    assert main(["data", "contamination", str(exam), str(train), "--output", str(tmp_path / "c.json")]) == 0
    assert "3 of 4 exam items" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "c.json").read_text())["items"]) == 3


def test_the_real_ceval_slice_is_clean_against_the_real_instruction_sets(shared_data):
    found, checked = find_overlaps(shared_data / "ceval", [shared_data / "instructions"])
    assert checked > 100 and found == []


def test_excluded_items_are_left_out_of_the_score(tmp_path, tiny_model_dir, capsys):
    """`adept data contamination --output` feeds `--exclude`: the contaminated items are not scored, the
    rest are, and a bad exclusion file stops with one line naming it."""
    from adeptlm.errors import InputError
    from adeptlm.evaluate.exam import run_exam
    from adeptlm.evaluate.protocol import ExamConfig

    exam = _exam(tmp_path / "exam", [
        ("0", "Which gas do green plants take in from the air during photosynthesis", "oxygen",
         "carbon dioxide", "helium", "neon", "B"),
        ("1", "Name the red planet", "Venus", "Mars", "Jupiter", "Saturn", "B"),
        ("2", "How many legs has a spider", "six", "eight", "ten", "four", "B"),
    ])
    train = tmp_path / "train.json"
    train.write_text(json.dumps([{"instruction": "Quiz: name the red planet. Mars!", "input": "", "output": "ok"}]),
                     encoding="utf-8")
    found = tmp_path / "found.json"
    assert main(["data", "contamination", str(exam), str(train), "--output", str(found)]) == 0
    base = dict(model=str(tiny_model_dir), data_dir=exam, few_shot=False, do_save_csv=True)
    full = run_exam(ExamConfig(output_dir=tmp_path / "all", **base))
    clean = run_exam(ExamConfig(output_dir=tmp_path / "clean", exclude=found, **base))
    assert full["All"]["num"] == 3 and clean["All"]["num"] == 2
    rows = (tmp_path / "clean" / "take0" / "demo_val.csv").read_text(encoding="utf-8")
    assert "red planet" not in rows and "spider" in rows
    # another exclusion list is another evaluation: finished subjects are not reused for it
    assert json.loads((tmp_path / "clean" / "eval-config.json").read_text())["exclude"] == str(found)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"items": [{"subject": "demo", "id": 1}]}))
    with pytest.raises(InputError) as err:
        run_exam(ExamConfig(output_dir=tmp_path / "bad", exclude=bad, **base))
    assert str(err.value).startswith(str(bad)) and "items[0]" in str(err.value)
