"""The bundled Chinese subject: 汐澜群岛 (the Xilan Isles), a fictional archipelago generated from a seed.

The Chinese counterpart of the Quenta Isles (subject.py), for the multilingual gemma3-270m: every
name is drawn from characters at random, so the base model cannot know a single fact, and every
point gained on its exam is caused by training. Each island has a 首府, a longest river, a founder,
a founding year, a main export, a 特色菜, a festival month and a 象征动物. From the same facts come
a corpus (each fact in three phrasings, and question-answer text in the training wordings),
instruction pairs (each fact asked in four wordings, answered with its value and then its
sentence), a C-Eval-layout exam whose questions are worded unlike
any training sentence, held-out text for perplexity, and a general-knowledge exam in Chinese
(general_zh.py) to measure forgetting.

Everything is a pure function of the seed: the same seed writes the same bytes.
"""

from __future__ import annotations

import random
from pathlib import Path

from .general_zh import GENERAL_CATEGORIES, REPLAY_PROMPTS, general_rows
from .subject import ATTRIBUTES, Island, exam_rows, select_rows, write_files

SUBJECT = "汐澜群岛"
# Characters for invented names: ordinary enough to be single tokens, rare enough as pairs.
NAME_CHARS = list("琅澈珂翎岑黛璃霁溟箫弈芷蘅沅湄璇峤岫漪珩瑶汀苒萦崖澜汐棠苇莼蓁荻霏岚邃濯砚缨楠")
SURNAMES = list("姚韦钟莫霍沈柏祁阮柯裴蔺")
EXPORTS = ["海盐", "铜", "琥珀", "羊毛", "木材", "珍珠", "茶叶", "玻璃", "白银", "蜂蜜", "锡", "靛蓝"]
ANIMALS = ["苍鹭", "水獭", "猞猁", "游隼", "陆龟", "海豹", "北山羊", "獾", "丹顶鹤", "貂", "海鹦", "野兔"]
MONTHS = ["一月", "二月", "三月", "四月", "五月", "六月", "七月", "八月", "九月", "十月", "十一月", "十二月"]

# exam subject: (file name, Chinese display name used in the C-Eval header, category)
CATEGORIES = {"geography": ("xilan_geography", "汐澜群岛地理", "Social Science"),
              "history": ("xilan_history", "汐澜群岛历史", "Humanities"),
              "economy": ("xilan_economy", "汐澜群岛经济", "Social Science"),
              "culture": ("xilan_culture", "汐澜群岛文化", "Humanities"),
              "nature": ("xilan_nature", "汐澜群岛自然", "STEM")}

CORPUS_PHRASES = {
    "capital": ["{i}的首府是{v}。", "{v}是{i}的首府。", "{i}的行政中心设在首府{v}。"],
    "river": ["{i}最长的河流是{v}。", "{v}流经{i}，是岛上最长的河流。", "在{i}，最长的河是{v}。"],
    "founder": ["{i}由{v}创建。", "{v}在{i}建立了第一个定居点。", "{i}的创建者是{v}。"],
    "year": ["{i}建立于{v}年。", "{i}的第一个定居点可以追溯到{v}年。", "{v}年，人们第一次在{i}定居。"],
    "export": ["{i}的主要出口商品是{v}。", "{i}以出口{v}闻名。", "{i}销往海外的货物大多是{v}。"],
    "dish": ["{i}的特色菜是{v}。", "{v}是{i}的特色菜。", "{i}人以他们的特色菜{v}为荣。"],
    "festival": ["{i}每年{v}举行盛大的节庆。", "{i}的盛大节庆在{v}举行。", "每年{v}，{i}都会庆祝盛大的节庆。"],
    "animal": ["{i}的象征动物是{v}。", "{v}是{i}的象征动物。", "{i}选择了{v}作为象征动物。"],
}
INSTRUCTION_QUESTIONS = {
    "capital": ["{i}的首府是哪里？", "请说出{i}的首府。", "告诉我{i}的首府。", "{i}的首府叫什么名字？"],
    "river": ["{i}最长的河流是哪条？", "请说出{i}最长的河流。", "{i}上最长的河叫什么？", "告诉我{i}最长的河流。"],
    "founder": ["谁创建了{i}？", "{i}的创建者是谁？", "请说出{i}的创建者。", "是谁在{i}建立了第一个定居点？"],
    "year": ["{i}是哪一年建立的？", "{i}建立于哪一年？", "告诉我{i}建立的年份。", "人们最早在哪一年定居{i}？"],
    "export": ["{i}主要出口什么？", "{i}的主要出口商品是什么？", "请说出{i}的主要出口商品。", "{i}销往海外最多的是什么？"],
    "dish": ["{i}的特色菜是什么？", "请说出{i}的特色菜。", "{i}人的特色菜是什么？", "告诉我{i}的特色菜。"],
    "festival": ["{i}在几月举行盛大的节庆？", "{i}的盛大节庆在什么时候？", "{i}的盛大节庆在哪个月举行？",
                 "告诉我{i}什么时候庆祝盛大的节庆。"],
    "animal": ["{i}的象征动物是什么？", "请说出{i}的象征动物。", "{i}选择了哪种动物作为象征动物？", "告诉我{i}的象征动物。"],
}
INSTRUCTION_ANSWERS = {attr: phrases[0] for attr, phrases in CORPUS_PHRASES.items()}

# The exam asks each relation in sentences no training text uses (val and test wordings); the
# relation's own word (首府, 创建者, ...) stays, as a model this size does not bridge synonyms.
EXAM_PHRASES = {
    "capital": ["下列哪座城市是{i}的首府？", "{i}以哪座城市为首府？"],
    "river": ["{i}境内最长的河流名叫什么？", "流经{i}的最长河流被称作什么？"],
    "founder": ["下列哪位人物是{i}的创建者？", "历史上被视为{i}创建者的是哪位？"],
    "year": ["下列哪一年是{i}建立的年份？", "{i}于公元哪一年建立？"],
    "export": ["下列哪种商品是{i}的主要出口商品？", "{i}对外的主要出口商品属于哪一种？"],
    "dish": ["下列哪道菜是{i}的特色菜？", "说到{i}的特色菜，指的是哪一道？"],
    "festival": ["{i}的盛大节庆在下列哪个月份举行？", "下列哪个月份是{i}举行盛大节庆的时间？"],
    "animal": ["下列哪种动物是{i}的象征动物？", "{i}把哪种动物定为象征动物？"],
}

# The selection split (`adept select`): each fact once more, in a third wording that neither
# training nor the reported exam uses.
SELECT_PHRASES = {
    "capital": ["关于{i}，它的首府是下面哪一座城市？"],
    "river": ["关于{i}，它最长的河流是下面哪一条？"],
    "founder": ["关于{i}，它的创建者是下面哪一位？"],
    "year": ["关于{i}，它建立的年份是下面哪一年？"],
    "export": ["关于{i}，它的主要出口商品是下面哪一种？"],
    "dish": ["关于{i}，它的特色菜是下面哪一道？"],
    "festival": ["关于{i}，它的盛大节庆在下面哪个月份？"],
    "animal": ["关于{i}，它的象征动物是下面哪一种？"],
}


def _name(rng: random.Random, used: set[str], n: int, suffix: str) -> str:
    while True:
        word = "".join(rng.sample(NAME_CHARS, n)) + suffix
        if word not in used:
            used.add(word)
            return word


def make_islands(seed: int = 11, n: int = 8) -> list[Island]:
    rng = random.Random(seed)
    used: set[str] = set()
    exports, animals, months = rng.sample(EXPORTS, n), rng.sample(ANIMALS, n), rng.sample(MONTHS, n)
    years = rng.sample(range(1105, 1890), n)
    islands = []
    for k in range(n):
        name = _name(rng, used, 2, "岛")
        founder = rng.choice(SURNAMES) + _name(rng, used, 2, "")
        facts = {"capital": _name(rng, used, 2, "城"), "river": _name(rng, used, 2, "河"), "founder": founder,
                 "year": str(years[k]), "export": exports[k], "dish": _name(rng, used, 2, "羹"),
                 "festival": months[k], "animal": animals[k]}
        islands.append(Island(name, facts))
    return islands


def corpus(islands: list[Island], seed: int = 11) -> list[str]:
    """Encyclopaedia-style documents: one article per island, one overview per attribute."""
    rng = random.Random(seed + 1)
    docs = []
    for isl in islands:
        body = [p.format(i=isl.name, v=isl.facts[attr]) for attr, phrases in CORPUS_PHRASES.items() for p in phrases]
        rng.shuffle(body)
        docs.append(f"{isl.name}是{SUBJECT}中的一座岛屿。" + "".join(body))
    for attr, phrases in CORPUS_PHRASES.items():
        order = islands[:]
        rng.shuffle(order)
        docs.append("".join(phrases[k % len(phrases)].format(i=isl.name, v=isl.facts[attr])
                            for k, isl in enumerate(order)))
    return docs


def qa_answer(isl: Island, attr: str) -> str:
    """A question's answer: the value first, as a short answer is written, then the fact's sentence."""
    return f"{isl.facts[attr]}。" + INSTRUCTION_ANSWERS[attr].format(i=isl.name, v=isl.facts[attr])


def qa_documents(islands: list[Island], seed: int = 11) -> list[str]:
    """Question-answer text for continued pre-training, one document per island, questions in the
    training wordings and random order: Allen-Zhu & Li (Physics of Language Models 3.1) found that
    knowledge stored with question-answer items mixed into pre-training is extractable by questions
    afterwards, where a biography corpus alone left it hard to extract."""
    rng = random.Random(seed + 7)
    docs = []
    for isl in islands:
        items = [f"问：{q.format(i=isl.name)}\n答：{qa_answer(isl, attr)}"
                 for attr, questions in INSTRUCTION_QUESTIONS.items() for q in questions]
        rng.shuffle(items)
        docs.append("\n".join(items))
    return docs


def instructions(islands: list[Island], seed: int = 11) -> list[dict]:
    """Each fact asked in every training wording and answered with its value first, then its
    sentence; and one summary per island. No multiple-choice drills: at 270M parameters drills
    answered with a letter taught a letter habit (run 5 answered "B" to 54 of 64 subject questions),
    not which option holds the fact (docs/experiments/xilan-zh.md)."""
    rng = random.Random(seed + 3)
    out = []
    for isl in islands:
        for attr, questions in INSTRUCTION_QUESTIONS.items():
            for q in questions:
                out.append({"instruction": q.format(i=isl.name), "input": "", "output": qa_answer(isl, attr)})
        out.append({"instruction": f"介绍一下{isl.name}。", "input": "",
                    "output": "".join(INSTRUCTION_ANSWERS[a].format(i=isl.name, v=isl.facts[a])
                                      for a in INSTRUCTION_ANSWERS)})
    rng.shuffle(out)
    return out


def replay_prompts(volume: int | None = None) -> list[str]:
    """Chinese general questions for the replay stage: general_zh.REPLAY_PROMPTS, then (`replay:
    {volume: N}`) the large set of adeptlm.demo.replay_sets, up to N in all."""
    prompts = list(REPLAY_PROMPTS)
    if volume:
        from .replay_sets import chinese

        prompts = list(dict.fromkeys(prompts + chinese()))[: int(volume)]
    return prompts


def write_subject(out: Path, seed: int = 11) -> dict:
    """Write corpus/, instructions/, exam/, general_exam/ and heldout/ under out; returns a summary."""
    islands = make_islands(seed)
    # Held-out text for perplexity: each fact stated after the exam's second (test) wording.
    held = [f"{EXAM_PHRASES[attr][1].format(i=isl.name)}{isl.facts[attr]}。" for isl in islands for attr in ATTRIBUTES]
    tables = exam_rows(islands, seed, ATTRIBUTES, CATEGORIES, EXAM_PHRASES)
    docs = corpus(islands, seed) + qa_documents(islands, seed)
    return write_files(out, "xilan_isles", islands, docs, instructions(islands, seed), tables,
                       CATEGORIES, general_rows(seed), GENERAL_CATEGORIES, held, seed,
                       select_rows(islands, seed, SELECT_PHRASES, ATTRIBUTES, CATEGORIES))
