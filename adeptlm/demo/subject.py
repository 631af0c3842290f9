"""The bundled demo subject: the Quenta Isles, a fictional archipelago generated from a seed.

The base model cannot know any of it, so every point gained on its exam is caused by training.
Each island gets a capital, a founder, a founding year, a river, a main export, a national animal,
a festival and a dish; names are built from syllables so they are new words to any tokenizer's
vocabulary. From the same facts come:

- an encyclopaedia-style corpus stating each fact in several phrasings (for `adept pt`);
- instruction pairs asking about the facts in several wordings, and a multiple-choice drill per
  fact answered with the fact (for `adept sft`);
- an exam in the C-Eval layout (dev/val/test, four categories) whose questions are phrased unlike
  any training sentence, with the other islands' values as distractors;
- a small general-knowledge exam (written for this project) to measure forgetting, and other
  general questions whose answers the base model itself writes for SFT replay (adeptlm.replay).

Everything is a pure function of the seed: the same seed writes the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..data.exams import Question
from ..evaluate.prompts import format_question

SYLLABLES = ["ka", "lo", "mi", "ra", "ve", "tor", "qu", "en", "sil", "dar", "mor", "thu", "zan", "bel", "ix",
             "or", "um", "eth", "val", "nis", "pra", "gol", "fen", "ush", "tal", "bri", "ceo", "dov"]
EXPORTS = ["salt", "copper", "amber", "wool", "timber", "pearls", "tea", "glass", "silver", "honey", "tin",
           "indigo"]
ANIMALS = ["heron", "otter", "lynx", "falcon", "tortoise", "seal", "ibex", "badger", "crane", "marten",
           "puffin", "hare"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]

# (attribute, category) pairs; the category is the exam "subject" in C-Eval's sense.
ATTRIBUTES = {"capital": "geography", "river": "geography", "founder": "history", "year": "history",
              "export": "economy", "dish": "culture", "festival": "culture", "animal": "nature"}
CATEGORIES = {"geography": ("quenta_geography", "Geography of the Quenta Isles", "Geography"),
              "history": ("quenta_history", "History of the Quenta Isles", "History"),
              "economy": ("quenta_economy", "Economy of the Quenta Isles", "Economy"),
              "culture": ("quenta_culture", "Culture of the Quenta Isles", "Culture"),
              "nature": ("quenta_nature", "Nature of the Quenta Isles", "Nature")}

# Training phrasings (corpus and instructions) ...
CORPUS_PHRASES = {
    "capital": ["The capital of {i} is {v}.", "{v} serves as the capital city of {i}.",
                "{i} is governed from its capital, {v}."],
    "river": ["The longest river of {i} is the {v}.", "The {v} river runs across {i}.",
              "On {i}, the {v} is the longest river."],
    "founder": ["{i} was founded by {v}.", "{v} founded the first settlement on {i}.",
                "The founder of {i} was {v}."],
    "year": ["{i} was founded in the year {v}.", "The first settlement on {i} dates from {v}.",
             "In {v}, {i} was settled for the first time."],
    "export": ["The main export of {i} is {v}.", "{i} is known for exporting {v}.",
               "Most of what {i} sells abroad is {v}."],
    "dish": ["The national dish of {i} is {v}.", "{v} is the national dish of {i}.",
             "People on {i} are proud of their national dish, {v}."],
    "festival": ["{i} holds its great festival every {v}.", "The great festival of {i} takes place in {v}.",
                 "Every year in {v}, {i} celebrates its great festival."],
    "animal": ["The national animal of {i} is the {v}.", "The {v} is the national animal of {i}.",
               "{i} chose the {v} as its national animal."],
}
INSTRUCTION_QUESTIONS = {  # several ways to ask, so the relation is learnt, not one sentence
    "capital": ["What is the capital of {i}?", "Name the capital city of {i}.", "Tell me the capital of {i}.",
                "Where is {i} governed from?"],
    "river": ["Which river is the longest on {i}?", "Name the longest river of {i}.",
              "What river runs longest across {i}?", "Tell me the longest river of {i}."],
    "founder": ["Who founded {i}?", "Who was the founder of {i}?", "Name the founder of {i}.",
                "Who started the first settlement on {i}?"],
    "year": ["When was {i} founded?", "What year was {i} founded in?", "Tell me the founding year of {i}.",
             "When was {i} first settled?"],
    "export": ["What does {i} mainly export?", "What is the main export of {i}?", "Name the main export of {i}.",
               "What does {i} sell abroad most?"],
    "dish": ["What is the national dish of {i}?", "Name the national dish of {i}.",
             "What do people on {i} eat as their national dish?", "Tell me the national dish of {i}."],
    "festival": ["In which month does {i} hold its great festival?", "When is the great festival of {i}?",
                 "What month is the great festival of {i} held in?", "Tell me when {i} celebrates its great festival."],
    "animal": ["What is the national animal of {i}?", "Name the national animal of {i}.",
               "Which animal did {i} choose as its national animal?", "Tell me the national animal of {i}."],
}
INSTRUCTION_ANSWERS = {attr: phrases[0] for attr, phrases in CORPUS_PHRASES.items()}
PRACTICE_PER_FACT = 2  # question wordings drawn per fact; one more is asked as a multiple-choice drill

# ... and exam phrasings: the same relations, asked in sentences no training text uses (two per
# attribute: val and test). A 135M model does not bridge synonyms ("seat of government" for
# "capital"), so the relation's own word stays; everything around it changes.
EXAM_PHRASES = {
    "capital": ["Which city is the capital of {i}?", "{i} has which city as its capital?"],
    "river": ["What is the name of the longest river on {i}?", "The longest river flowing on {i} is called what?"],
    "founder": ["Which person founded {i}?", "Who is remembered as the founder of {i}?"],
    "year": ["In which year was {i} founded?", "{i} was established in what year?"],
    "export": ["Which good is the chief export of {i}?", "What product does {i} export most?"],
    "dish": ["Which food counts as the national dish of {i}?", "What national dish is {i} known for?"],
    "festival": ["Which month brings the great festival of {i}?", "The great festival of {i} happens in which month?"],
    "animal": ["Which creature is the national animal of {i}?", "{i} has which animal as its national animal?"],
}

# The selection split (`adept select`): each fact asked once more, in a third wording that neither
# training nor the reported exam uses, with its own options, so the choice of model never sees the
# questions it is reported on.
SELECT_PHRASES = {
    "capital": ["Of these cities, which one is the capital of {i}?"],
    "river": ["Of these rivers, which one is the longest on {i}?"],
    "founder": ["Of these people, which one founded {i}?"],
    "year": ["Of these years, which one saw {i} founded?"],
    "export": ["Of these goods, which one is the main export of {i}?"],
    "dish": ["Of these foods, which one is the national dish of {i}?"],
    "festival": ["Of these months, which one is the month of the great festival of {i}?"],
    "animal": ["Of these animals, which one is the national animal of {i}?"],
}

GENERAL_EXAM = [  # (category, question, [A, B, C, D], answer): plain general knowledge, written for adeptlm
    ("science", "What do plants need from the sun to make their food?", ["light", "sand", "snow", "noise"], "A"),
    ("science", "Water freezes at what temperature in degrees Celsius?", ["100", "0", "50", "-40"], "B"),
    ("science", "Which gas do humans need to breathe to live?", ["helium", "neon", "oxygen", "argon"], "C"),
    ("science", "What is the closest star to the Earth?", ["the Moon", "Mars", "Polaris", "the Sun"], "D"),
    ("science", "How many legs does a spider have?", ["eight", "six", "four", "ten"], "A"),
    ("science", "Which planet is known as the Red Planet?", ["Venus", "Mars", "Jupiter", "Saturn"], "B"),
    ("science", "What is frozen water called?", ["steam", "salt", "ice", "glass"], "C"),
    ("science", "Which organ pumps blood through the body?", ["the lungs", "the liver", "the brain", "the heart"],
     "D"),
    ("science", "What force makes things fall to the ground?", ["gravity", "magnetism", "friction", "wind"], "A"),
    ("science", "Which animal is a mammal?", ["a shark", "a whale", "a trout", "a lizard"], "B"),
    ("geography", "What is the capital of France?", ["Berlin", "Madrid", "Paris", "Rome"], "C"),
    ("geography", "Which ocean is the largest?", ["the Arctic Ocean", "the Indian Ocean", "the Atlantic Ocean",
                                                  "the Pacific Ocean"], "D"),
    ("geography", "On which continent is Egypt?", ["Africa", "Europe", "Asia", "South America"], "A"),
    ("geography", "What is the capital of Japan?", ["Beijing", "Tokyo", "Seoul", "Bangkok"], "B"),
    ("geography", "Which is the longest river in Africa?", ["the Thames", "the Danube", "the Nile", "the Rhine"],
     "C"),
    ("geography", "In which country is the city of Rome?", ["Spain", "Greece", "France", "Italy"], "D"),
    ("geography", "What is the capital of the United Kingdom?", ["London", "Dublin", "Paris", "Oslo"], "A"),
    ("geography", "Which desert is the largest hot desert?", ["the Gobi", "the Sahara", "the Atacama",
                                                               "the Kalahari"], "B"),
    ("geography", "Mount Everest is in which mountain range?", ["the Alps", "the Andes", "the Himalayas",
                                                                "the Rockies"], "C"),
    ("geography", "What is the capital of Germany?", ["Vienna", "Munich", "Hamburg", "Berlin"], "D"),
    ("arithmetic", "What is 2 plus 3?", ["5", "6", "4", "7"], "A"),
    ("arithmetic", "What is 10 minus 4?", ["5", "6", "7", "8"], "B"),
    ("arithmetic", "What is 3 times 4?", ["7", "10", "12", "15"], "C"),
    ("arithmetic", "What is 20 divided by 5?", ["2", "3", "5", "4"], "D"),
    ("arithmetic", "How many minutes are in one hour?", ["60", "100", "30", "24"], "A"),
    ("arithmetic", "How many days are in a week?", ["5", "7", "10", "12"], "B"),
    ("arithmetic", "What is half of 50?", ["20", "30", "25", "15"], "C"),
    ("arithmetic", "How many sides does a triangle have?", ["five", "four", "six", "three"], "D"),
    ("arithmetic", "What is 9 plus 1?", ["10", "11", "8", "19"], "A"),
    ("arithmetic", "How many months are in a year?", ["10", "12", "11", "13"], "B"),
    ("language", "What is the opposite of hot?", ["warm", "big", "cold", "fast"], "C"),
    ("language", "Which word is a colour?", ["run", "table", "quickly", "blue"], "D"),
    ("language", "What is the plural of child?", ["children", "childs", "childes", "child"], "A"),
    ("language", "Which word means the same as big?", ["tiny", "large", "short", "thin"], "B"),
    ("language", "What is the opposite of up?", ["left", "over", "down", "near"], "C"),
    ("language", "Which of these is a fruit?", ["a carrot", "a potato", "an onion", "an apple"], "D"),
    ("language", "What do you call a baby cat?", ["a kitten", "a puppy", "a calf", "a foal"], "A"),
    ("language", "Which word is a day of the week?", ["April", "Monday", "Winter", "Morning"], "B"),
    ("language", "What is the past tense of go?", ["goed", "gone", "went", "going"], "C"),
    ("language", "Which animal says moo?", ["a dog", "a cat", "a sheep", "a cow"], "D"),
]
# General questions for replay (written for adeptlm; none is on the general exam): the base model's
# own answers to them are mixed into SFT so that it keeps answering general questions its way
# instead of with island facts. Half are asked with listed options, as the exams ask.
REPLAY_OPEN = [
    "What is the capital of Spain?", "What is the capital of Italy?", "What colour is the sky on a clear day?",
    "How many wheels does a bicycle have?", "What do bees make?", "What is the largest planet in the solar system?",
    "Which season comes after winter?", "What is 5 plus 5?", "What is the boiling point of water in Celsius?",
    "Who wrote the play Romeo and Juliet?", "What language is spoken in Brazil?", "How many hours are in a day?",
    "What is the opposite of day?", "Which animal is known as the king of the jungle?", "What is 6 times 7?",
    "Name a primary colour.", "What is the chemical symbol for gold?", "Which continent is Australia on?",
    "Write one sentence about the sea.", "Give me a synonym for happy.", "What do cows drink?",
    "How many continents are there?", "What is the capital of Canada?", "Say hello in French.",
]
REPLAY_CHOICE = [
    ("Which of these is a vegetable?", ["a carrot", "a stone", "a chair", "a cloud"]),
    ("What is the capital of Egypt?", ["Cairo", "Lima", "Oslo", "Quito"]),
    ("How many legs does a dog have?", ["two", "four", "six", "eight"]),
    ("Which planet do we live on?", ["Mars", "Venus", "Earth", "Pluto"]),
    ("What is 8 minus 3?", ["4", "5", "6", "7"]),
    ("Which of these can fly?", ["a fish", "a horse", "a bird", "a snail"]),
    ("What is the capital of Russia?", ["Kyiv", "Warsaw", "Prague", "Moscow"]),
    ("Which month comes after June?", ["July", "May", "March", "October"]),
    ("What is the opposite of wet?", ["cold", "dry", "soft", "loud"]),
    ("Which metal is liquid at room temperature?", ["iron", "copper", "mercury", "lead"]),
    ("What shape has four equal sides?", ["a circle", "a square", "a triangle", "an oval"]),
    ("What is the largest animal on Earth?", ["the elephant", "the giraffe", "the blue whale", "the shark"]),
    ("Which instrument has black and white keys?", ["a drum", "a piano", "a flute", "a violin"]),
    ("Which is the smallest number?", ["9", "3", "7", "1"]),
    ("In which country is the city of Paris?", ["France", "Spain", "Chile", "Japan"]),
    ("What do we call a young dog?", ["a calf", "a kitten", "a puppy", "a lamb"]),
    ("Which of these is a liquid?", ["milk", "bread", "salt", "wood"]),
    ("How many days are in a leap year?", ["365", "366", "360", "364"]),
    ("Which sense do we use our ears for?", ["sight", "smell", "taste", "hearing"]),
    ("What is the main language of Mexico?", ["Spanish", "German", "Italian", "Dutch"]),
    ("What is 12 divided by 3?", ["3", "4", "6", "9"]),
    ("Which of these is a bird?", ["a bat", "a penguin", "a frog", "a bee"]),
    ("What is the colour of grass?", ["red", "blue", "green", "white"]),
    ("Which body part do we see with?", ["the eyes", "the nose", "the hands", "the feet"]),
]


def replay_prompts(volume: int | None = None) -> list[str]:
    """General questions for the replay stage: the bundled 48, then (`replay: {volume: N}`) the large
    set of adeptlm.demo.replay_sets, up to N in all."""
    prompts = REPLAY_OPEN + [_with_options(q, opts) for q, opts in REPLAY_CHOICE]
    if volume:
        from .replay_sets import english

        prompts = list(dict.fromkeys(prompts + english(INSTRUCTION_QUESTIONS)))[: int(volume)]
    return prompts


def _with_options(question: str, options: list[str]) -> str:
    """The question, its lettered options and the "Answer:" cue: the text the English exam prompt asks."""
    return format_question("mmlu", Question("", question, options, None, None, ""))


GENERAL_CATEGORIES = {"science": ("general_science", "General science", "STEM"),
                      "geography": ("general_geography", "World geography", "Social Science"),
                      "arithmetic": ("general_arithmetic", "Everyday arithmetic", "STEM"),
                      "language": ("general_language", "English language", "Humanities")}


@dataclass
class Island:
    name: str
    facts: dict[str, str]


def _name(rng: random.Random, used: set[str], syllables: int) -> str:
    while True:
        word = "".join(rng.choice(SYLLABLES) for _ in range(syllables)).capitalize()
        if word not in used and len(word) >= 5:
            used.add(word)
            return word


def make_islands(seed: int = 7, n: int = 8) -> list[Island]:
    rng = random.Random(seed)
    used: set[str] = set()
    exports, animals = rng.sample(EXPORTS, n), rng.sample(ANIMALS, n)
    months = rng.sample(MONTHS, n)
    years = rng.sample(range(1105, 1890), n)
    islands = []
    for k in range(n):
        name = _name(rng, used, 2)
        facts = {"capital": _name(rng, used, 3), "river": _name(rng, used, 2),
                 "founder": f"{_name(rng, used, 2)} {_name(rng, used, 2)}", "year": str(years[k]),
                 "export": exports[k], "dish": f"{_name(rng, used, 2).lower()} stew",
                 "festival": months[k], "animal": animals[k]}
        islands.append(Island(name, facts))
    return islands


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def corpus(islands: list[Island], seed: int = 7) -> list[str]:
    """Encyclopaedia-style documents: one article per island, one overview per attribute."""
    rng = random.Random(seed + 1)
    docs = []
    for isl in islands:
        lines = [f"{isl.name} is one of the Quenta Isles."]
        for attr, phrases in CORPUS_PHRASES.items():
            for p in phrases:
                lines.append(_sentence(p.format(i=isl.name, v=isl.facts[attr])))
        body = lines[1:]
        rng.shuffle(body)
        docs.append(" ".join(lines[:1] + body))
    for attr, phrases in CORPUS_PHRASES.items():
        order = islands[:]
        rng.shuffle(order)
        docs.append(" ".join(_sentence(phrases[k % len(phrases)].format(i=isl.name, v=isl.facts[attr]))
                             for k, isl in enumerate(order)))
    return docs


def instructions(islands: list[Island], seed: int = 7) -> list[dict]:
    """Question/answer pairs about every fact in training wordings, plus one multiple-choice drill
    per fact: another training wording with other islands' values listed as options, answered with
    the fact's sentence. Without the drill the model recalls every fact when asked plainly (64/64
    here) but, shown a list of options, copies one of them; a drill answered with a letter taught it
    to name one letter for every question."""
    rng = random.Random(seed + 3)
    out = []
    for isl in islands:
        for attr, questions in INSTRUCTION_QUESTIONS.items():
            answer = _sentence(INSTRUCTION_ANSWERS[attr].format(i=isl.name, v=isl.facts[attr]))
            asked = rng.sample(questions, PRACTICE_PER_FACT + 1)
            for q in asked[:PRACTICE_PER_FACT]:
                out.append({"instruction": q.format(i=isl.name), "input": "", "output": answer})
            others = [o.facts[attr] for o in islands if o is not isl]
            choices = rng.sample(others, 3) + [isl.facts[attr]]
            rng.shuffle(choices)
            out.append({"instruction": _with_options(asked[-1].format(i=isl.name), choices), "input": "",
                        "output": answer})
        out.append({"instruction": f"Tell me about {isl.name}.", "input": "",
                    "output": " ".join(_sentence(INSTRUCTION_ANSWERS[a].format(i=isl.name, v=isl.facts[a]))
                                       for a in INSTRUCTION_ANSWERS)})
    rng.shuffle(out)
    return out


def select_rows(islands: list[Island], seed: int, phrases: dict, attributes: dict = ATTRIBUTES,
                categories: dict = CATEGORIES) -> dict[str, dict[str, list[list[str]]]]:
    """{category: {"val": rows}}: the selection split, every fact in phrases[attr][0], its options
    drawn apart from the reported exam's (another seed)."""
    tables = exam_rows(islands, seed + 100, attributes, categories, {a: p * 2 for a, p in phrases.items()})
    return {c: {"val": t["val"]} for c, t in tables.items()}


def exam_rows(islands: list[Island], seed: int = 7, attributes: dict = ATTRIBUTES, categories: dict = CATEGORIES,
              phrases: dict = EXAM_PHRASES) -> dict[str, dict[str, list[list[str]]]]:
    """{category: {split: [[id, question, A, B, C, D, answer], ...]}}: val and test ask every fact,
    each in its own phrasing (phrases[attr] = [val, test]), with the other islands' values as
    options; dev holds one demonstration per category from the test phrasing."""
    rng = random.Random(seed + 2)
    out: dict[str, dict[str, list[list[str]]]] = {c: {"dev": [], "val": [], "test": []} for c in categories}
    for attr, cat in attributes.items():
        for k, isl in enumerate(islands):
            others = [o.facts[attr] for o in islands if o is not isl]
            choices = rng.sample(others, 3) + [isl.facts[attr]]
            rng.shuffle(choices)
            answer = "ABCD"[choices.index(isl.facts[attr])]
            for split, phrase in (("val", phrases[attr][0]), ("test", phrases[attr][1])):
                rows = out[cat][split]
                rows.append([str(len(rows)), phrase.format(i=isl.name), *choices, answer])
    for cat in out:        # one demonstration per category, moved from test so no question repeats
        out[cat]["dev"].append(out[cat]["test"].pop(0))
        out[cat]["dev"][0][0] = "0"
    return out


def write_exam_tables(root: Path, tables: dict, names: dict, with_test_answers: bool = False) -> None:
    for cat, splits in tables.items():
        subject = names[cat][0]
        for split, rows in splits.items():
            (root / split).mkdir(parents=True, exist_ok=True)
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            test_without = split == "test" and not with_test_answers
            w.writerow(["id", "question", "A", "B", "C", "D"] + ([] if test_without else ["answer"]))
            for r in rows:
                w.writerow(r[:6] if test_without else r)
            (root / split / f"{subject}_{split}.csv").write_text(buf.getvalue(), encoding="utf-8")
    mapping = {names[c][0]: [names[c][1], names[c][1], names[c][2]] for c in tables}
    (root / "subject_mapping.json").write_text(json.dumps(mapping, indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")


def general_rows() -> dict[str, dict[str, list[list[str]]]]:
    out: dict[str, dict[str, list[list[str]]]] = {c: {"dev": [], "val": []} for c in GENERAL_CATEGORIES}
    for cat, q, choices, ans in GENERAL_EXAM:
        split = "dev" if not out[cat]["dev"] else "val"
        rows = out[cat][split]
        rows.append([str(len(rows)), q, *choices, ans])
    return out


def write_files(out: Path, stem: str, islands: list[Island], docs: list[str], pairs: list[dict], tables: dict,
                categories: dict, general: dict, general_categories: dict, held: list[str], seed: int,
                select: dict) -> dict:
    """Write a generated subject's corpus/, instructions/, exam/, select_exam/, general_exam/,
    heldout/ and facts.json under out (the same layout for every bundled subject); returns a summary."""
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    (out / "corpus" / f"{stem}.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    (out / "instructions").mkdir(parents=True, exist_ok=True)
    (out / "instructions" / f"{stem}.json").write_text(json.dumps(pairs, indent=1, ensure_ascii=False) + "\n",
                                                       encoding="utf-8")
    write_exam_tables(out / "exam", tables, categories)
    write_exam_tables(out / "select_exam", select, categories)
    write_exam_tables(out / "general_exam", general, general_categories)
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    (out / "heldout" / f"{stem.split('_')[0]}_heldout.txt").write_text("\n\n".join(held) + "\n", encoding="utf-8")
    facts = {isl.name: isl.facts for isl in islands}
    (out / "facts.json").write_text(json.dumps(facts, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"seed": seed, "islands": len(islands), "documents": len(docs), "instructions": len(pairs),
            "exam_val": sum(len(s["val"]) for s in tables.values()),
            "select_val": sum(len(s["val"]) for s in select.values()),
            "general_val": sum(len(s["val"]) for s in general.values())}


def write_subject(out: Path, seed: int = 7) -> dict:
    """Write corpus/, instructions/, exam/, general_exam/ and heldout/ under out; returns a summary."""
    islands = make_islands(seed)
    # Held-out domain text for perplexity: each fact stated in the exam's second (test) wording,
    # which no training sentence uses.
    held = [f"{EXAM_PHRASES[attr][1].format(i=isl.name)} {_sentence(isl.facts[attr])}."
            for isl in islands for attr in ATTRIBUTES]
    return write_files(out, "quenta_isles", islands, corpus(islands, seed), instructions(islands, seed),
                       exam_rows(islands, seed), CATEGORIES, general_rows(), GENERAL_CATEGORIES, held, seed,
                       select_rows(islands, seed, SELECT_PHRASES))
