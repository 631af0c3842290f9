"""Does a GGUF file behave like the model it came from? Tokenization, greedy answers, an exam.

Both sides are driven through the same backend interface (backends.py): the HF model by
transformers, the GGUF by llama.cpp. Prompts are built once with the HF tokenizer and fed to both
as ids, so greedy agreement measures the weights and the graph; tokenization is compared
separately, text by text, with llama.cpp's own tokenizer.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import write_text
from ..errors import AdeptError

# English, Chinese (simplified, traditional, full-width punctuation and spaces), code, emoji, whitespace
# runs, digits, mixed scripts and special-token text.
TOKENIZER_SAMPLE = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! It's 2026; don't panic: we'll see.",
    "大型语言模型在中文考试上的表现如何？请用一句话回答。",
    "北京是中华人民共和国的首都，位于华北平原。",
    "繁體中文：臺灣的學校與圖書館，還有廣東話「唔該」。",
    "全角标点：，。！？；：“引号”【方括号】（圆括号）《书名》……——～",
    "全角空格\u3000和  多个   半角空格",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "for (int i = 0; i < n; ++i) { sum += x[i] * 0.5f; }",
    "Emoji test: 🙂🚀👍🏽 and 🇨🇳🇬🇧 flags, ❤️ hearts.",
    "   leading spaces,\ttabs\t\tand\n\n\nnewlines   trailing   ",
    "Numbers: 1234567890, 3.14159, -42, 1e-10, 100%.",
    "Mixed 中英 text with 数字 123 and symbols ©®™ — “quotes” ‘single’.",
    "https://example.com/path?query=value&x=1#frag user@example.org",
    "ÀÉÎÕÜ àéîõü ß Æ Ø Å ñ ç, Ελληνικά, русский язык, العربية, हिन्दी",
    "<|im_start|>user\nhello<|im_end|>",
    "",
]

GREEDY_PROMPTS = [
    "What is the capital of France?", "Write one sentence about the sea.", "List three primary colours.",
    "How many days are in a week?", "Translate 'good morning' into French.", "What is 12 plus 30?",
    "Name a planet in the solar system.", "Give me a synonym for 'happy'.", "What does a bee make?",
    "请用中文介绍一下你自己。", "中国的首都是哪里？", "一年有几个季节？", "Explain what a noun is.",
    "What colour is the sky on a clear day?", "Write a haiku about autumn.", "What is Python used for?",
    "Who wrote Romeo and Juliet?", "What is the boiling point of water in Celsius?",
    "Suggest a name for a cat.", "Describe a tree in five words.",
]


@dataclass
class CheckReport:
    model: str
    gguf: str
    tokenization_texts: int = 0
    tokenization_mismatches: list = field(default_factory=list)
    greedy_tokens: int = 32
    greedy_prompts: int = 0
    greedy_identical: int = 0
    greedy_token_agreement: float = 0.0     # matching positions before the first difference / compared positions
    greedy_examples: list = field(default_factory=list)
    logits: dict | None = None              # per-token KL and NMSE of llama.cpp's logits against HF's
    exam: dict | None = None

    def lines(self) -> list[str]:
        out = [f"tokenization: {self.tokenization_texts - len(self.tokenization_mismatches)}/"
               f"{self.tokenization_texts} texts identical",
               f"greedy ({self.greedy_tokens} tokens): {self.greedy_identical}/{self.greedy_prompts} prompts "
               f"identical, token agreement {100 * self.greedy_token_agreement:.1f}%"]
        if self.logits:
            g = self.logits
            out.append(f"logits over {g['positions']} positions: mean KL(HF || GGUF) {g['mean_kl']:.2e} (max "
                       f"{g['max_kl']:.2e}), NMSE {g['nmse']:.2e}, same top token {100 * g['same_top']:.1f}%; "
                       f"{g['verdict']}")
        for m in self.tokenization_mismatches:
            out.append(f"  differs: {m['text']!r}: HF {m['hf'][:12]} vs llama.cpp {m['gguf'][:12]}")
        if self.exam:
            out.append(f"exam ({self.exam['questions']} questions): HF {self.exam['hf_accuracy']:.2f}% vs GGUF "
                       f"{self.exam['gguf_accuracy']:.2f}% (difference {self.exam['difference']:+.2f} points, "
                       f"{self.exam['same_predictions']:.1f}% same answers)")
        return out


# What "the same model" means for the logits, per token (KL in nats). Measured on the embedded model
# along the 20 greedy answers (491 positions): f16 mean KL 4.6e-6, NMSE 1.3e-6; q8_0 mean KL 4.9e-3,
# NMSE 1.6e-3 (96.3% same top token). Past the quantised bounds the export changed the model.
LOGIT_THRESHOLDS = {"f16-like": {"mean_kl": 1e-3, "nmse": 1e-4}, "quantised": {"mean_kl": 5e-2, "nmse": 2e-2}}


class _LogitStats:
    """Accumulates KL(HF || GGUF), squared error and top-token agreement over positions."""

    def __init__(self):
        self.kl, self.max_kl, self.err, self.ref, self.same, self.n = 0.0, 0.0, 0.0, 0.0, 0, 0

    def add(self, hf_logits, gguf_logits) -> None:
        import torch

        from ..evaluate.retention import kl_rows

        h, g = hf_logits.float(), gguf_logits.float()
        kl = kl_rows(torch.log_softmax(h, -1), torch.log_softmax(g, -1))
        self.kl += float(kl.sum())
        self.max_kl = max(self.max_kl, float(kl.max()))
        self.err += float(((g - h) ** 2).sum())
        self.ref += float((h ** 2).sum())
        self.same += int((h.argmax(-1) == g.argmax(-1)).sum())
        self.n += h.shape[0]

    def result(self) -> dict | None:
        if not self.n:
            return None
        mean_kl, nmse = self.kl / self.n, self.err / self.ref if self.ref else 0.0
        verdict = next((f"within the {name} thresholds (mean KL < {t['mean_kl']:g}, NMSE < {t['nmse']:g})"
                        for name, t in LOGIT_THRESHOLDS.items() if mean_kl < t["mean_kl"] and nmse < t["nmse"]),
                       "ABOVE the quantised thresholds: the export changed the model")
        return {"positions": self.n, "mean_kl": mean_kl, "max_kl": self.max_kl, "nmse": nmse,
                "same_top": self.same / self.n, "verdict": verdict}


def _agreement(a: list[int], b: list[int]) -> tuple[int, int]:
    """Positions that agree before the first difference, and the positions compared."""
    n = max(len(a), len(b))
    same = 0
    for x, y in zip(a, b):
        if x != y:
            break
        same += 1
    return same, n


def check_gguf(model: str, gguf_path: str | Path, output_dir: str | Path | None = None, exam_dir: str | None = None,
               n_tokens: int = 32, exam_limit: int | None = None, with_prompt: bool = False) -> CheckReport:
    from ..backends import HFBackend, LlamaCppBackend

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise AdeptError(f"{gguf_path}: no such GGUF file")
    hf = HFBackend.load(model)
    tok = hf.tokenizer
    gg = LlamaCppBackend(gguf_path, tok)
    report = CheckReport(model=str(model), gguf=str(gguf_path), greedy_tokens=n_tokens)

    for text in TOKENIZER_SAMPLE:
        want = tok(text, add_special_tokens=False)["input_ids"]
        got = gg.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        report.tokenization_texts += 1
        if want != got:
            report.tokenization_mismatches.append({"text": text, "hf": want, "gguf": got})

    same_total = n_total = 0
    stats = _LogitStats()
    for prompt in GREEDY_PROMPTS:
        # the one chat prompt every command builds (backends.Backend.chat_prompt); plain text without a template
        ids = hf.chat_prompt([{"role": "user", "content": prompt}]) if hf.template else hf.encode(prompt)
        a = hf.generate([ids], n_tokens, hf.stop_ids)[0]
        b = gg.generate([ids], n_tokens, hf.stop_ids)[0]
        _logits_along(hf, gg, ids, a, stats)
        same, n = _agreement(a, b)
        same_total, n_total = same_total + same, n_total + n
        report.greedy_prompts += 1
        report.greedy_identical += a == b
        if len(report.greedy_examples) < 5 or a != b:
            report.greedy_examples.append({"prompt": prompt, "hf": tok.decode(a), "gguf": tok.decode(b)})
    report.greedy_token_agreement = same_total / n_total if n_total else 1.0
    report.logits = stats.result()
    gg.close()
    del hf

    out = Path(output_dir) if output_dir else gguf_path.parent / f"{gguf_path.stem}-check"
    out.mkdir(parents=True, exist_ok=True)
    if exam_dir:
        report.exam = _exam_both(model, gguf_path, Path(exam_dir), out, exam_limit, with_prompt)
    write_text(out / "check.json", json.dumps(asdict(report), indent=2, ensure_ascii=False))
    return report


def _logits_along(hf, gg, ids: list[int], continuation: list[int], stats: _LogitStats) -> None:
    """Both models' logits at every position that predicts a token of HF's greedy continuation: one HF
    forward over the whole sequence; llama.cpp one new token at a time (its cache keeps the prefix)."""
    import torch

    if not continuation:
        return
    seq = list(ids) + list(continuation)
    with torch.inference_mode():
        h = hf.model(input_ids=torch.tensor([seq[:-1]])).logits[0, len(ids) - 1:].float()
    g = torch.stack([torch.from_numpy(gg.next_logits(seq[:len(ids) + k])) for k in range(len(continuation))])
    stats.add(h, g)


def _exam_both(model: str, gguf_path: Path, exam_dir: Path, out: Path, limit: int | None, with_prompt: bool) -> dict:
    """The same exam, same prompts, through transformers and through llama.cpp."""
    from ..evaluate.exam import ExamConfig, run_exam

    results = {}
    for side, spec, backend in (("hf", model, "transformers"), ("gguf", str(gguf_path), "llama.cpp")):
        cfg = ExamConfig(model=spec, data_dir=exam_dir, output_dir=out / f"exam-{side}", limit=limit,
                         backend=backend, tokenizer=model if side == "gguf" else None, with_prompt=with_prompt,
                         do_save_csv=True)
        results[side] = run_exam(cfg)
    preds = {}
    for side in results:
        rows = {}
        for csv_path in sorted((out / f"exam-{side}" / "take0").glob("*.csv")):
            with open(csv_path, encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    rows[(csv_path.name, row["id"])] = row["model_output"]
        preds[side] = rows
    common = set(preds["hf"]) & set(preds["gguf"])
    same = sum(preds["hf"][k] == preds["gguf"][k] for k in common)
    hf_acc, gg_acc = results["hf"]["All"]["score"], results["gguf"]["All"]["score"]
    return {"dir": str(exam_dir), "questions": results["hf"]["All"]["num"], "hf_accuracy": hf_acc,
            "gguf_accuracy": gg_acc, "difference": gg_acc - hf_acc,
            "same_predictions": 100.0 * same / len(common) if common else 0.0}
