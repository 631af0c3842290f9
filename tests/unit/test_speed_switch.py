"""--cpu_kernels: `off` is the stock Trainer + PEFT path (same adapter as one built by hand with their
public APIs); `auto` takes the speed paths only for fp32 CPU training without FSDP/DeepSpeed/k-bit and
with the library releases they were tested with; with --loss_divisor and --length_sampler held equal,
the switch changes speed only."""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file

from adeptlm.cli import main
from adeptlm.runrecord import read_run
from adeptlm.train.args import parse_train_args
from adeptlm.train.cpu.switch import kernels_on

RECORDS = [{"instruction": f"Question {i}: what is {i} plus {i}?", "input": "", "output": f"It is {2 * i}." * (1 + i % 3)}
           for i in range(8)]


def _flags(model_dir, data, out, kernels):
    return ["--model_name_or_path", str(model_dir), "--dataset_dir", str(data), "--output_dir", str(out),
            "--max_steps", "6", "--per_device_train_batch_size", "2", "--learning_rate", "1e-2",
            "--logging_steps", "1", "--report_to", "none", "--save_steps", "1000", "--lora_dropout", "0",
            "--lora_rank", "4", "--lora_alpha", "8", "--trainable", "q_proj,v_proj", "--seed", "3",
            "--validation_split_percentage", "0", "--cpu_kernels", kernels]


def _stock_adapter(model_dir, data, out):
    """The same training written with transformers' Trainer and PEFT's get_peft_model only."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, set_seed

    from adeptlm.data.instructions import read_instructions
    from adeptlm.data.tokenize import encode_records
    from adeptlm.templates import get_template

    cfg = parse_train_args("sft", _flags(model_dir, data, out, "off"))
    tok = AutoTokenizer.from_pretrained(model_dir)
    template = get_template(tok)
    ds, _ = encode_records(read_instructions(data)[1], tok, template, cfg.data.max_seq_length, "truncate", None)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    base.config.use_cache = False
    set_seed(cfg.training.seed)
    model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0,
                                            target_modules=["q_proj", "v_proj"]))
    pad = DataCollatorForSeq2Seq(tok, label_pad_token_id=-100, padding="longest")
    trainer = Trainer(model=model, args=cfg.training, train_dataset=ds, processing_class=tok,
                      data_collator=lambda fs: pad([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in fs]))
    trainer.train()
    trainer.save_model(str(out))
    return load_file(out / "adapter_model.safetensors")


def test_off_trains_the_same_adapter_as_the_stock_trainer_and_peft(tmp_path, tiny_model_dir):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    ours = tmp_path / "off"
    assert main(["sft", *_flags(tiny_model_dir, data, ours, "off")]) == 0
    assert read_run(ours)["metrics"]["cpu_kernels"] is False
    got = load_file(ours / "adapter_model.safetensors")
    want = _stock_adapter(tiny_model_dir, data, tmp_path / "stock")
    assert got.keys() == want.keys() and any(t.abs().sum() > 0 for k, t in got.items() if "lora_B" in k)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6, msg=k)
    # the speed paths (auto takes them here) on the same batches (the stock random sampler): the first
    # step's logged loss is the stock one to float precision, later ones move apart only as far as the
    # epoch-constant divisor weighs the steps' gradients differently
    runs = {}
    for kernels in ("off", "auto"):
        out = tmp_path / f"ungrouped-{kernels}"
        assert main(["sft", *_flags(tiny_model_dir, data, out, kernels), "--group_by_length", "false"]) == 0
        runs[kernels] = read_run(out)["metrics"]
    assert runs["auto"]["cpu_kernels"] is True
    off_losses, fast_losses = ([h["loss"] for h in runs[k]["loss_history"]] for k in ("off", "auto"))
    assert len(off_losses) == len(fast_losses) == 6
    assert abs(off_losses[0] - fast_losses[0]) < 1e-4 * off_losses[0], (off_losses, fast_losses)
    assert all(abs(a - b) < 0.1 * a for a, b in zip(off_losses, fast_losses)), (off_losses, fast_losses)


def test_auto_steps_aside_off_the_measured_setting(tiny_model_dir, tmp_path):
    def on(*extra):
        return kernels_on(parse_train_args("sft", ["--model_name_or_path", str(tiny_model_dir),
                                                   "--output_dir", str(tmp_path), *extra]))
    assert on() is True
    assert on("--cpu_kernels", "off") is False
    assert on("--bf16", "true", "--use_cpu", "true") is False
    assert on("--bf16", "true", "--cpu_kernels", "on") is True
    assert on("--load_in_kbits", "4") is False


def test_cpu_matmul_precision_holds_for_the_stage_only(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """--cpu_matmul_precision bf16 sets oneDNN's fp32 matmul precision while the stage runs and puts
    the previous value back after; a CPU without bfloat16 matrix instructions is refused in one line."""
    import adeptlm.train.sft as sft
    from adeptlm.train.cpu import switch as speed

    seen = []
    from dataclasses import replace

    monkeypatch.setattr(sft, "STAGE", replace(sft.STAGE, run=lambda cfg: seen.append(
        torch.backends.mkldnn.matmul.fp32_precision)))   # the registry reads the module's STAGE
    before = torch.backends.mkldnn.matmul.fp32_precision
    flags = ["sft", "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "o")]
    monkeypatch.setattr(speed, "bf16_matmul_supported", lambda: True)
    assert main(flags + ["--cpu_matmul_precision", "bf16"]) == 0
    assert main(flags) == 0
    assert seen == ["bf16", before] and torch.backends.mkldnn.matmul.fp32_precision == before
    monkeypatch.setattr(speed, "bf16_matmul_supported", lambda: False)
    assert main(flags + ["--cpu_matmul_precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "AVX512_BF16 or AMX" in err[0]
    assert len(seen) == 2 and torch.backends.mkldnn.matmul.fp32_precision == before


def test_untested_library_versions_take_the_stock_path_with_one_line(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """The speed paths override private methods: with a release other than the ones they were tested with
    (faked here), `auto` trains on the stock path and says so once; `on` still forces them."""
    from adeptlm.train.cpu import switch as speed

    assert speed.untested_versions({"torch": "2.13.0+cpu", "transformers": "5.26.1", "peft": "0.21.2",
                                    "accelerate": "1.16.0"}) == ["transformers 5.26.1"]
    assert speed.untested_versions(dict(speed.TESTED_WITH)) == []
    monkeypatch.setattr(speed, "untested_versions", lambda installed=None: ["peft 0.99.0"])
    monkeypatch.setattr(speed, "_warned", set())
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    out = tmp_path / "auto"
    assert main(["sft", *_flags(tiny_model_dir, data, out, "auto")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("the CPU speed paths were tested with") == 1 and "found peft 0.99.0" in printed
    run = read_run(out)["metrics"]
    assert run["cpu_kernels"] is False and len(run["loss_history"]) == 6
    assert kernels_on(parse_train_args("sft", ["--model_name_or_path", str(tiny_model_dir), "--output_dir",
                                               str(tmp_path / "on"), "--cpu_kernels", "on"])) is True


def test_the_speed_switch_changes_speed_only(tmp_path, tiny_model_dir):
    """With --loss_divisor and --length_sampler held equal, --cpu_kernels on and off train the same
    adapter (no dropout: its masks come from another generator on the fast path): the switch changes
    how fast, not what is trained. Each semantic flag alone does change the adapter."""
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    adapters = {}
    for kernels, divisor, sampler in [("on", "epoch", "seeded"), ("off", "epoch", "seeded"),
                                      ("on", "step", "stock"), ("off", "step", "stock")]:
        out = tmp_path / f"{kernels}-{divisor}-{sampler}"
        assert main(["sft", *_flags(tiny_model_dir, data, out, kernels), "--loss_divisor", divisor,
                     "--length_sampler", sampler]) == 0
        run = read_run(out)["metrics"]
        assert (run["cpu_kernels"], run["loss_divisor"], run["length_sampler"]) == (kernels == "on", divisor, sampler)
        adapters[kernels, divisor] = load_file(out / "adapter_model.safetensors")
    for divisor in ("epoch", "step"):
        fast, stock = adapters["on", divisor], adapters["off", divisor]
        for k in stock:
            torch.testing.assert_close(fast[k], stock[k], rtol=0, atol=1e-6, msg=f"{divisor} {k}")
    moved = max((adapters["off", "epoch"][k] - adapters["off", "step"][k]).abs().max().item()
                for k in adapters["off", "step"] if "lora_B" in k)
    assert moved > 1e-3          # the divisor is a change to what is trained, not to speed


def test_the_allocator_and_huge_pages_follow_the_switch(tiny_model_dir, tmp_path, monkeypatch):
    """Huge pages are asked for by training commands only (where they were measured), never with the
    switch off; ADEPT_CPU_KERNELS=off turns the speed paths and glibc's setting off everywhere."""
    from adeptlm import allocator
    from adeptlm.train.cpu import switch as speed
    from adeptlm.train.stages import NAMES

    training = (*NAMES, "run")
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    monkeypatch.delenv(allocator.SWITCH_ENV, raising=False)
    assert allocator.ask_for_huge_pages(["eval", "exam", "--data_dir", "x"], training) is False
    assert allocator.ask_for_huge_pages(["sft", "--cpu_kernels", "off"], training) is False
    assert allocator.ask_for_huge_pages(["--debug", "dpo", "--cpu_kernels=off"], training) is False
    assert "THP_MEM_ALLOC_ENABLE" not in os.environ
    assert allocator.ask_for_huge_pages(["--debug", "sft", "--cpu_kernels", "auto"], training) is True
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE")
    monkeypatch.setenv(allocator.SWITCH_ENV, "off")
    assert allocator.ask_for_huge_pages(["sft"], training) is False and "THP_MEM_ALLOC_ENABLE" not in os.environ
    assert allocator.keep_freed_memory() is False  # glibc left alone
    cfg = parse_train_args("sft", ["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "o")])
    monkeypatch.setattr(speed, "untested_versions", lambda installed=None: [])
    assert kernels_on(cfg) is False
    cfg.compat.cpu_kernels = "on"  # the flag wins over the environment
    assert kernels_on(cfg) is True
    monkeypatch.setenv(allocator.SWITCH_ENV, "auto")
    cfg.compat.cpu_kernels = "auto"
    assert kernels_on(cfg) is True
