"""The console of a training stage, as a log file sees it: one line per logging step (adeptlm's step
line; no metrics dict, no progress-bar redraws), no third-party warning the user cannot act on, no
run of blank lines; --verbose brings the Trainer's metrics dict back."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import warnings

from adeptlm.quiet import LOG_FILTERS, install
from conftest import ROOT
from test_train import RECORDS, write_jsonl
from test_train_resume_ddp import flags


def _sft(tmp_path, tiny_model_dir, name, *extra, steps=4):
    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        write_jsonl(data / "train.jsonl", RECORDS)
    out = subprocess.run([sys.executable, "-m", "adeptlm", "sft",
                          *flags(tiny_model_dir, data, tmp_path / name, steps), "--save_strategy", "no", *extra],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_one_line_per_logging_step(tmp_path, tiny_model_dir):
    text = _sft(tmp_path, tiny_model_dir, "quiet")
    lines = text.splitlines()
    steps = [ln for ln in lines if ln.startswith("adept: step ")]
    assert [int(re.match(r"adept: step (\d+)/4 ", ln).group(1)) for ln in steps] == [1, 2, 3, 4]
    assert "{'loss'" not in text and "'learning_rate'" not in text   # no metrics dict
    assert "\r" not in text                                            # no bar redraws in a log
    assert "Warning" not in text and "[WARNING]" not in text, text
    assert "\n\n\n" not in text
    # twice the steps, the same lines besides the step lines: one line per logging step, no more
    longer = _sft(tmp_path, tiny_model_dir, "longer", steps=8).splitlines()
    assert sum(ln.startswith("adept: step ") for ln in longer) == 8
    assert len(longer) - 8 == len(lines) - 4, "\n".join(longer)

    verbose = _sft(tmp_path, tiny_model_dir, "verbose", "--verbose", "True")
    assert verbose.count("'loss'") >= 4


def test_filters_are_narrow():
    install()
    name, start, _ = LOG_FILTERS[0]
    logger = logging.getLogger(name)
    kept = []
    handler = logging.Handler()
    handler.emit = kept.append
    logger.addHandler(handler)
    try:
        logger.warning(start + " If you have GPU or other accelerator, we were unable to detect it.")
        logger.warning("a DeepSpeed warning about something else")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in kept] == ["a DeepSpeed warning about something else"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        install()
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("some other deprecation", FutureWarning)
    assert [str(w.message) for w in seen] == ["some other deprecation"]
