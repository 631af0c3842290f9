"""Exam layouts as data: one registered Layout per file layout, holding what the reader, the prompts,
the split choice and the answer extraction need to know about it.

A layout is told from an exam CSV's first row (`detect`); the number of options is read from the
file (the header's letter columns A, B, C, ..., or the width of a headerless row), from 2 to 10
(MMLU-Pro has ten, AGIEval five). The prompt texts are the seed's (shared/seed/SPEC.md sections
5-7) for the letter formulation and lm-evaluation-harness's mmlu_continuation shape for cloze;
C-Eval and CMMLU share their Chinese prompts and differ only in their files.

Adding a layout is one more LAYOUTS entry here (and its subject names in evaluate/subjects.py when
it has a table of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

LETTERS = tuple("ABCDEFGHIJ")
MIN_OPTIONS, MAX_OPTIONS = 2, len(LETTERS)


def letters(n: int) -> tuple[str, ...]:
    """The answer letters of an n-option question."""
    return LETTERS[:n]


def letter_list(n: int) -> str:
    """'A, B, C, D' for error messages."""
    return ", ".join(letters(n))


@dataclass(frozen=True)
class Layout:
    name: str  # `adept eval <name>`, run.json's protocol.layout, --prompt_style
    title: str  # "C-Eval"
    files: str  # how its files look, for --help and `adept data check`
    detect: Callable[[Sequence[str]], bool]  # the first row's cells (stripped) -> is it this layout
    header: bool  # the files have a header row naming the columns
    eval_splits: tuple[str, ...]  # the splits scored when none is asked for, first present wins
    unanswered_split: str | None  # the split published without answers (its answer column may be absent)
    index_column: bool  # with no id column, the first (unnamed) column is the question's id
    columns: str  # its columns, {} the option letters
    english: bool  # prompts in English (MMLU's) rather than Chinese (C-Eval's)
    # Prompts. {spaced} is the subject key's words each after a space (the seed's MMLU header, whose
    # double space is the original's), {words} the words joined by spaces, {display} the subject's
    # display name (Chinese for C-Eval and CMMLU).
    letter_header: str
    cloze_header: str  # no options are shown, so the questions are not called multiple choice
    acknowledgement: str  # the assistant's reply to the header in a few-shot chat prompt
    answer_cue: str
    answer_delimiter: str  # between the cue and the answer letter in a demonstration
    cloze_question: str  # the question in the cloze form, {} its text
    cloze_delimiter: str  # between the cue and an option's text (lm-evaluation-harness's target_delimiter)

    def subject_words(self, name: str, display: str) -> dict[str, str]:
        words = name.split("_")
        return {"spaced": "".join(" " + w for w in words), "words": " ".join(words), "display": display}

    def columns_hint(self, n: int = 4) -> str:
        """The columns of an n-option file, for error messages."""
        return self.columns.format(",".join(letters(n)))


_ZH = dict(english=False, letter_header="以下是中国关于{display}考试的单项选择题，请选出其中的正确答案。\n\n",
           cloze_header="以下是中国关于{display}考试的问题（附答案）。\n\n",
           acknowledgement="好的，我会结合{display}相关知识回答", answer_cue="\n答案：", answer_delimiter="",
           cloze_question="{}", cloze_delimiter="")

LAYOUTS: tuple[Layout, ...] = (
    # CMMLU before C-Eval: both name a question column, CMMLU's is capitalised
    Layout("cmmlu", "CMMLU", "dev/test, <subject>.csv, header ,Question,A,B,C,D,Answer",
           detect=lambda first: "Question" in first, header=True, eval_splits=("test",), unanswered_split=None,
           index_column=True, columns=",Question,{},Answer", **_ZH),
    Layout("ceval", "C-Eval", "dev/val/test, <subject>_<split>.csv with header id,question,A,B,C,D,answer",
           detect=lambda first: "question" in [c.lower() for c in first], header=True, eval_splits=("val", "test"),
           unanswered_split="test", index_column=False, columns="id,question,{},answer", **_ZH),
    Layout("mmlu", "MMLU", "dev/val/test, <subject>_<split>.csv, no header: question,A,B,C,D,answer",
           detect=lambda first: True, header=False, eval_splits=("val", "test"), unanswered_split=None,
           index_column=False, columns="question,{},answer", english=True,
           letter_header="The following are multiple choice questions (with answers) about {spaced}.\n\n",
           cloze_header="The following are questions (with answers) about {words}.\n\n",
           acknowledgement="OK, I will answer the questions about{spaced}.", answer_cue="\nAnswer:",
           answer_delimiter=" ", cloze_question="Question: {}", cloze_delimiter=" "),
)
NAMES = tuple(sorted(x.name for x in LAYOUTS))
_BY_NAME = {x.name: x for x in LAYOUTS}


def get(layout: str | Layout) -> Layout:
    if isinstance(layout, Layout):
        return layout
    try:
        return _BY_NAME[layout]
    except KeyError:
        raise ValueError(f"unknown exam layout {layout!r}: expected one of {', '.join(NAMES)}") from None


def detect(first_row: Sequence[str]) -> Layout:
    """The layout of an exam CSV from its first row's cells (stripped)."""
    return next(x for x in LAYOUTS if x.detect(first_row))
