"""Runs that survive: SIGKILL mid-training then resume equals an uninterrupted run; 2-process DDP
(gloo on CPU) equals one process with twice the gradient accumulation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from adeptlm.runrecord import read_run
from conftest import ROOT
from test_train import RECORDS, write_jsonl

MORE = RECORDS + [
    {"instruction": "Hello there", "input": "", "output": "Hello! What is two plus two?"},
    {"instruction": "Instruction input output", "input": "", "output": "Response: the lazy dog."},
    {"instruction": "Name a fox", "input": "", "output": "The quick brown fox."},
    {"instruction": "Count", "input": "", "output": "0123456789"},
]


def flags(model_dir, data, out, steps, **extra):
    args = ["--model_name_or_path", str(model_dir), "--dataset_dir", str(data), "--output_dir", str(out),
            "--max_steps", str(steps), "--per_device_train_batch_size", "2", "--learning_rate", "1e-2",
            "--logging_steps", "1", "--report_to", "none", "--lora_dropout", "0.1", "--seed", "7",
            "--trainable", "q_proj,v_proj,down_proj", "--lora_rank", "4"]
    for k, v in extra.items():
        args += [f"--{k}", str(v)]
    return args


def adept(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "adeptlm", "sft", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", MORE)
    steps = 60
    ref = adept(flags(tiny_model_dir, data, tmp_path / "ref", steps, save_steps=5))
    out_ref = ref.communicate(timeout=600)[0]
    assert ref.returncode == 0, out_ref

    out = tmp_path / "run"
    victim = adept(flags(tiny_model_dir, data, out, steps, save_steps=5))
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None:
        if (out / "checkpoint-10" / "trainer_state.json").is_file():
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert read_run(out) is None  # nothing looks finished

    again = adept(flags(tiny_model_dir, data, out, steps, save_steps=5))
    text = again.communicate(timeout=600)[0]
    assert again.returncode == 0, text
    assert "resuming from" in text
    a = load_file(tmp_path / "ref" / "adapter_model.safetensors")
    b = load_file(out / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    ref_losses = [h["loss"] for h in read_run(tmp_path / "ref")["metrics"]["loss_history"]]
    assert len(ref_losses) == steps


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_process_ddp_matches_one_process_with_double_accumulation(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", MORE)
    common = dict(per_device_train_batch_size=1, save_steps=1000, lora_dropout=0, group_by_length=False,
                  train_sampling_strategy="sequential")
    one = adept(flags(tiny_model_dir, data, tmp_path / "one", 6, gradient_accumulation_steps=2, **common))
    text = one.communicate(timeout=600)[0]
    assert one.returncode == 0, text
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                          "-m", "adeptlm", "sft",
                          *flags(tiny_model_dir, data, tmp_path / "two", 6, gradient_accumulation_steps=1, **common)],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    l1 = [h["loss"] for h in read_run(tmp_path / "one")["metrics"]["loss_history"]]
    l2 = [h["loss"] for h in read_run(tmp_path / "two")["metrics"]["loss_history"]]
    assert len(l1) == len(l2) == 6
    assert l1 == pytest.approx(l2, rel=1e-4, abs=1e-5)
    a = load_file(tmp_path / "one" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter_model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
