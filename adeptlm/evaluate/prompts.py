"""Exam prompts as the seed builds them (shared/seed/SPEC.md sections 5-7).

C-Eval / CMMLU header: 以下是中国关于{中文科目名}考试的单项选择题，请选出其中的正确答案。 then
`question\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\n答案：` (+ `X\\n\\n` for a demonstration); the first `ntrain`
dev rows are the demonstrations. MMLU: `The following are multiple choice questions (with answers)
about  {subject words}.` (the double space is the original's) and `...\\nAnswer:` (+ ` X\\n\\n`).
`with_prompt` wraps the prompt in the model's chat template: zero-shot as one user turn; few-shot
as a user turn with the header, an assistant acknowledgement, then one user/assistant pair per
demonstration, then the question.

The cloze formulation (options=False; OLMES's CF) asks the question without its options and scores
each option's text after the answer cue. Its header drops "multiple choice" as lm-evaluation-harness's
mmlu_continuation task does: `The following are questions (with answers) about {subject}.` and
`Question: {q}\nAnswer:` + ` {option}` for MMLU; for C-Eval and CMMLU, written here in the same way,
`以下是中国关于{科目}考试的问题（附答案）。` and `{q}\n答案：` + `{option}`. In the chat template the
question and its cue are the user's turn, as in the letter form, and the option is scored where the
model's answer turn begins.

The texts are the layout's (data/layouts.py); every function takes its name or the Layout.

Every prompt is returned as token ids plus the length of the prefix it shares with the other
questions of its subject (header and demonstrations), so that prefix's keys and values can be
computed once and reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..data import layouts
from ..data.exams import LETTERS, Question
from ..data.layouts import Layout
from .subjects import SubjectInfo


def header(layout: str | Layout, info: SubjectInfo, options: bool = True) -> str:
    lay = layouts.get(layout)
    return (lay.letter_header if options else lay.cloze_header).format(**lay.subject_words(info.name, info.display))


def acknowledgement(layout: str | Layout, info: SubjectInfo) -> str:
    lay = layouts.get(layout)
    return lay.acknowledgement.format(**lay.subject_words(info.name, info.display))


def answer_cue(layout: str | Layout) -> str:
    return layouts.get(layout).answer_cue


def answer_delimiter(layout: str | Layout) -> str:
    """What stands between the cue and the answer letter in a demonstration."""
    return layouts.get(layout).answer_delimiter


def format_question(layout: str | Layout, q: Question, with_answer: bool = False, options: bool = True) -> str:
    """One question; options=False is the cloze form (no lettered options; the answer is its text)."""
    lay = layouts.get(layout)
    if not options:
        text = lay.cloze_question.format(q.question.strip()) + lay.answer_cue
        return text + (lay.cloze_delimiter + answer_text(q) + "\n\n" if with_answer else "")
    listed = "".join(f"\n{k}. {c}" for k, c in zip(LETTERS, q.choices))
    text = q.question + listed + lay.answer_cue
    if with_answer:
        text += lay.answer_delimiter + str(q.answer) + "\n\n"
    return text


def cloze_delimiter(layout: str | Layout) -> str:
    """What stands between the cue and an option's text in the cloze form (lm-evaluation-harness's
    target_delimiter: a space in English; nothing after the full-width colon of 答案：)."""
    return layouts.get(layout).cloze_delimiter


def answer_text(q: Question) -> str:
    return q.choices[LETTERS.index(q.answer)]


@dataclass
class Prompt:
    ids: list[int]
    prefix_len: int  # leading tokens shared by every question of the subject (0: none)
    text: str  # for CSV output and debugging
    # the ids end with this text's tokens (encoded with special tokens when tail_special): an option's
    # tokens are what follows them in the encoding of tail + option (lm-evaluation-harness's split)
    tail: str = ""
    tail_special: bool = False


def subject_prompts(layout: str | Layout, info: SubjectInfo, demos: Sequence[Question], questions: Sequence[Question],
                    tokenizer, with_prompt: bool, template=None, options: bool = True) -> list[Prompt]:
    """Prompts for all questions of one subject (options=False: the cloze formulation)."""
    head = header(layout, info, options)
    if not with_prompt:
        prefix = head + "".join(format_question(layout, d, True, options) for d in demos)
        out = []
        for q in questions:
            text = prefix + format_question(layout, q, options=options)
            out.append(Prompt(tokenizer(text)["input_ids"], 0, text, tail=text, tail_special=True))
        return _share_prefix(out)
    if not options:
        return _share_prefix([_chat_cloze(tokenizer, template, layout, head, demos, q) for q in questions])
    if not demos:
        return _share_prefix([_chat(tokenizer, template, [{"role": "user", "content": head + format_question(layout, q)}],
                                    0) for q in questions])
    turns = [{"role": "user", "content": head}, {"role": "assistant", "content": acknowledgement(layout, info)}]
    for d in demos:
        turns += [{"role": "user", "content": format_question(layout, d)},
                  {"role": "assistant", "content": str(d.answer)}]
    return _share_prefix([_chat(tokenizer, template, turns + [{"role": "user", "content": format_question(layout, q)}],
                                0) for q in questions])


def _chat_cloze(tokenizer, template, layout: str | Layout, head: str, demos: Sequence[Question], q: Question) -> Prompt:
    """The cloze form in the chat template, laid out as the letter form is: each question with its
    cue a user turn (the header before the first), each demonstration's answer an assistant turn
    holding the option's text, and the asked question's option scored where the model's answer
    turn begins."""
    turns = []
    for d in demos:
        turns += [{"role": "user", "content": format_question(layout, d, options=False)},
                  {"role": "assistant", "content": answer_text(d)}]
    turns.append({"role": "user", "content": format_question(layout, q, options=False)})
    turns[0] = {"role": "user", "content": head + turns[0]["content"]}
    return _chat(tokenizer, template, turns, 0)


def _share_prefix(prompts: list[Prompt]) -> list[Prompt]:
    """Mark the leading tokens that every prompt of the subject shares (header, demonstrations).

    Measured as the longest common prefix of the prompts' own token ids: tokenising the prefix text
    alone can end differently (a tokenizer may merge its trailing "\\n\\n" with what follows), and
    at zero-shot the header alone is still worth computing once.
    """
    if len(prompts) < 2:
        return prompts
    first = prompts[0].ids
    shared = min(len(p.ids) for p in prompts) - 1  # every prompt keeps a suffix to score
    for p in prompts[1:]:
        n = 0
        while n < shared and p.ids[n] == first[n]:
            n += 1
        shared = n
    if shared >= 8:  # below that, copying the cache costs more than it saves
        for p in prompts:
            p.prefix_len = shared
    return prompts


def _chat(tokenizer, template, messages, prefix_len) -> Prompt:
    from ..templates import encode_prompt

    ids = encode_prompt(tokenizer, template, messages)
    return Prompt(ids, prefix_len, tokenizer.decode(ids, skip_special_tokens=False))
