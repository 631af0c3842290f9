"""Scale-out on this CPU: FSDP through accelerate, two torchrun nodes and DeepSpeed ZeRO-2, each on 2
processes (gloo), give the losses and weights of one process with twice the gradient accumulation;
the shipped GPU configs are accepted by the Trainer's parser and by accelerate; a finished run
started again trains nothing."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from adeptlm.runrecord import read_run
from conftest import ROOT
from test_train_resume_ddp import MORE, flags
from test_train import write_jsonl

CONFIGS = ROOT / "configs"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# one sample per process and step, in order: two processes see the batches one process sees in two
SAME_BATCHES = dict(per_device_train_batch_size=1, save_steps=1000, lora_dropout=0, group_by_length=False,
                    train_sampling_strategy="sequential")
needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                     reason="DeepSpeed is not installed (pip install deepspeed)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def sft_args(model_dir, data, out, **extra) -> list[str]:
    return ["-m", "adeptlm", "sft", *flags(model_dir, data, out, 6, **SAME_BATCHES, **extra)]


def losses(out) -> list[float]:
    return [h["loss"] for h in read_run(out)["metrics"]["loss_history"]]


def same_weights(one, two, name: str) -> None:
    a, b = load_file(one / name), load_file(two / name)
    assert set(a) <= set(b)
    for k in set(b) - set(a):             # a sharded save writes a tied lm_head out as its own tensor
        assert k == "lm_head.weight" and torch.equal(b[k], b["model.embed_tokens.weight"])
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


@pytest.mark.parametrize("full", [False, True], ids=["lora", "full"])
def test_fsdp_on_cpu_matches_one_process(tmp_path, tiny_model_dir, full):
    data = write_jsonl(tmp_path / "train.jsonl", MORE)
    extra = dict(full_finetuning=True, learning_rate=1e-3) if full else {}
    run([sys.executable, *sft_args(tiny_model_dir, data, tmp_path / "one", gradient_accumulation_steps=2, **extra)])
    run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "fsdp_cpu.yaml"),
         "--main_process_port", str(free_port()), *sft_args(tiny_model_dir, data, tmp_path / "two", **extra)])
    two = read_run(tmp_path / "two")["metrics"]
    assert two["distributed"] == {"type": "FSDP", "processes": 2, "fsdp": True, "deepspeed": False}
    assert two["cpu_kernels"] is False     # the speed paths step aside under FSDP
    assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / "two"), rel=1e-4, abs=1e-5)
    same_weights(tmp_path / "one", tmp_path / "two", "model.safetensors" if full else "adapter_model.safetensors")
    if not full:   # the stock path: accelerate alone runs these CPU processes as DDP, with the same losses
        run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "fsdp_cpu.yaml"),
             "--main_process_port", str(free_port()),
             *sft_args(tiny_model_dir, data, tmp_path / "stock", cpu_fsdp="off")])
        assert read_run(tmp_path / "stock")["metrics"]["distributed"]["type"] == "MULTI_CPU"
        assert losses(tmp_path / "stock") == pytest.approx(losses(tmp_path / "two"), rel=1e-4, abs=1e-5)


def test_two_torchrun_nodes_match_one_process(tmp_path, tiny_model_dir):
    """Two launchers as two nodes of one process each (c10d rendezvous on 127.0.0.1), as on real machines."""
    data = write_jsonl(tmp_path / "train.jsonl", MORE)
    run([sys.executable, *sft_args(tiny_model_dir, data, tmp_path / "one", gradient_accumulation_steps=2)])
    port = free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                               "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "adept",
                               "--node_rank", str(rank), *sft_args(tiny_model_dir, data, tmp_path / "two")],
                              cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outs = [n.communicate(timeout=600)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert read_run(tmp_path / "two")["metrics"]["distributed"]["processes"] == 2
    assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / "two"), rel=1e-4, abs=1e-5)
    same_weights(tmp_path / "one", tmp_path / "two", "adapter_model.safetensors")


@needs_deepspeed
def test_deepspeed_zero2_on_cpu_matches_one_process(tmp_path, tiny_model_dir):
    """DeepSpeed's CPU accelerator runs ZeRO-2 here (its shared-memory collective op is compiled on
    first use); ZeRO-3 does not: see docs/guide/scale-out.md."""
    data = write_jsonl(tmp_path / "train.jsonl", MORE)
    run([sys.executable, *sft_args(tiny_model_dir, data, tmp_path / "one", gradient_accumulation_steps=2)])
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         *sft_args(tiny_model_dir, data, tmp_path / "two", deepspeed=CONFIGS / "ds_zero2.json", use_cpu=True)])
    two = read_run(tmp_path / "two")["metrics"]
    assert two["distributed"]["deepspeed"] is True and two["distributed"]["processes"] == 2
    assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / "two"), rel=1e-4, abs=1e-5)
    same_weights(tmp_path / "one", tmp_path / "two", "adapter_model.safetensors")


@needs_deepspeed
@pytest.mark.parametrize("name", ["ds_zero2", "ds_zero2_offload", "ds_zero3", "ds_zero3_offload"])
def test_shipped_deepspeed_configs_parse(tmp_path, name):
    from adeptlm.train.args import parse_train_args

    cfg = parse_train_args("sft", ["--output_dir", str(tmp_path), "--deepspeed", str(CONFIGS / f"{name}.json")])
    stage = cfg.training.hf_deepspeed_config.config["zero_optimization"]["stage"]
    assert stage == (3 if "zero3" in name else 2)


@pytest.mark.parametrize("name", ["fsdp_cpu", "fsdp_gpu"])
def test_shipped_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert str(cfg.distributed_type).endswith("FSDP") and cfg.fsdp_config["fsdp_version"] == 2


def test_a_finished_run_started_again_trains_nothing(tmp_path, tiny_model_dir):
    """transformers 5.24 would train one step past --max_steps when resumed from the final checkpoint."""
    data = write_jsonl(tmp_path / "train.jsonl", MORE)
    args = [sys.executable, "-m", "adeptlm", "sft", *flags(tiny_model_dir, data, tmp_path / "out", 4)]
    run(args)
    before = load_file(tmp_path / "out" / "adapter_model.safetensors")
    res = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == 0 and "nothing left to train" in res.stderr + res.stdout
    assert read_run(tmp_path / "out")["metrics"]["global_step"] == 4
    after = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
