"""adept pt / sft on tiny random models: losses, which parameters change, masks, caches, options."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from adeptlm.cli import main
from adeptlm.data.corpus import Document
from adeptlm.data.tokenize import end_of_text_id, pack_documents, start_of_text_ids
from adeptlm.runrecord import read_run

RECORDS = [
    {"instruction": "What is two plus two?", "input": "", "output": "Two plus two is four."},
    {"instruction": "Say hello", "input": "world", "output": "Hello world!"},
    {"instruction": "Who are you?", "input": "", "output": "You are a helpful assistant."},
    {"instruction": "Pick a word", "input": "", "output": "The quick brown fox jumps over the lazy dog."},
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def common_flags(model_dir, out, steps=8):
    return ["--model_name_or_path", str(model_dir), "--output_dir", str(out), "--max_steps", str(steps),
            "--per_device_train_batch_size", "2", "--learning_rate", "5e-3", "--logging_steps", "1",
            "--report_to", "none", "--save_steps", "1000", "--lora_dropout", "0", "--seed", "1"]


def losses(out):
    return [h["loss"] for h in read_run(out)["metrics"]["loss_history"]]


def test_sft_lora_loss_falls_and_only_lora_changes(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    out = tmp_path / "out"
    assert main(["sft", *common_flags(tiny_model_dir, out, steps=16), "--dataset_dir", str(data),
                 "--lora_rank", "8", "--lora_alpha", "16", "--trainable", "q_proj,v_proj,o_proj,down_proj",
                 "--learning_rate", "5e-2", "--lr_scheduler_type", "constant"]) == 0
    hist = losses(out)
    assert all(torch.isfinite(torch.tensor(hist)))
    assert sum(hist[-4:]) / 4 < sum(hist[:4]) / 4 - 0.5, hist
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    assert any(k.endswith("o_proj.lora_B.weight") for k in adapter)
    assert any(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)  # B starts at zero: it moved
    # the base is untouched: loading the adapter's base gives the original weights
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    from adeptlm.models import load_model

    tuned, _ = load_model(str(out))
    tuned_base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                  for k, v in tuned.state_dict().items() if "lora_" not in k}
    for k, v in base.state_dict().items():
        assert torch.equal(tuned_base[k], v), k
    run = read_run(out)
    assert run["stage"] == "sft" and run["data"]["trained_tokens"] > 0 and run["adapter"] is True
    assert (out / "chat_template.jinja").is_file()


def test_sft_modules_to_save_on_tied_embeddings(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    out = tmp_path / "out"
    assert main(["sft", *common_flags(tiny_model_dir, out, steps=4), "--dataset_dir", str(data),
                 "--modules_to_save", "embed_tokens,lm_head"]) == 0
    from adeptlm.models import load_model
    from transformers import AutoModelForCausalLM

    tuned, _ = load_model(str(out))
    emb = tuned.get_input_embeddings().weight
    head = tuned.get_output_embeddings().weight
    assert torch.equal(emb, head)  # still tied after training
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(emb, base.get_input_embeddings().weight)  # and trained


def test_full_finetuning_changes_all_weights(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    out = tmp_path / "out"
    assert main(["sft", *common_flags(tiny_model_dir, out, steps=3), "--dataset_dir", str(data),
                 "--full_finetuning", "True"]) == 0
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) >= len(before) - 1, set(before) - set(changed)  # (rotary buffers may be absent)


def test_pt_packs_with_end_of_text_and_keeps_the_tail(tiny_tokenizer):
    docs = [Document("Hello world", "a:1"), Document("The quick brown fox", "a:3"), Document("Two plus two", "b:1")]
    ds, stats = pack_documents(docs, tiny_tokenizer, block_size=5, isolate=False)
    eot = end_of_text_id(tiny_tokenizer)
    lengths = [len(tiny_tokenizer(d.text, add_special_tokens=False)["input_ids"]) for d in docs]
    flat = [t for b in ds["input_ids"] for t in b]
    assert len(flat) == sum(lengths) + len(docs) == stats.tokens
    assert flat.count(eot) == len(docs) and flat[-1] == eot
    assert all(len(b) == 5 for b in ds["input_ids"][:-1])
    assert stats.padding == 5 - len(ds["input_ids"][-1])
    assert ds["labels"] == ds["input_ids"]
    assert start_of_text_ids(tiny_tokenizer) == []  # a byte-level BPE without BOS, as SmolLM2's


def test_pt_opens_each_document_with_bos_where_the_tokenizer_adds_one():
    """Gemma and Llama tokenizers put BOS before every text; the packed stream keeps it per document,
    so training sees text as the tokenizer (and so inference, exams, perplexity) presents it."""
    from tokenizers import processors

    from conftest import build_spm_tokenizer

    tok = build_spm_tokenizer(dummy_prefix=False)
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)])
    assert start_of_text_ids(tok) == [tok.bos_token_id]
    docs = [Document("Hello world", "a:1"), Document("the quick fox", "a:2")]
    ds, stats = pack_documents(docs, tok, block_size=1000, isolate=False)
    eot = end_of_text_id(tok)
    want = [t for d in docs for t in (*tok(d.text)["input_ids"], eot)]
    assert ds["input_ids"] == [want] and stats.tokens == len(want)
    whole, _ = pack_documents(docs, tok, block_size=1000)  # best fit puts the longest first
    pieces = sorted(([*tok(d.text)["input_ids"], eot] for d in docs), key=len, reverse=True)
    assert whole["input_ids"] == [[t for piece in pieces for t in piece]]
    assert want.count(tok.bos_token_id) == 2 and want[0] == tok.bos_token_id


def test_pt_isolated_packing_keeps_documents_whole_and_restarts_positions(tiny_tokenizer):
    """Best-fit packing: every document that fits a block lies whole in one block, a longer one is cut
    into full blocks and a remainder; positions restart and the first token is untrained at each
    document (or piece) start; every token is kept once."""
    docs = [Document("Hello world", "a:1"), Document("The quick brown fox jumps over the lazy dog again and again", "a:3"),
            Document("Two plus two", "b:1"), Document("one more", "b:2"), Document("and the last of them", "b:3")]
    size = 12
    eot = end_of_text_id(tiny_tokenizer)
    pieces = [tiny_tokenizer(d.text, add_special_tokens=False)["input_ids"] + [eot] for d in docs]
    assert len(pieces[1]) > size and any(len(p) <= size // 2 for p in pieces)  # the test needs both kinds
    ds, stats = pack_documents(docs, tiny_tokenizer, block_size=size)
    blocks = []
    for ids, pos, labels in zip(ds["input_ids"], ds["position_ids"], ds["labels"]):
        assert len(ids) <= size and len(pos) == len(labels) == len(ids)
        starts = [k for k, p in enumerate(pos) if p == 0]
        assert starts[0] == 0 and all(pos[k] == pos[k - 1] + 1 for k in range(1, len(pos)) if k not in starts)
        assert labels == [-100 if k in starts else t for k, t in enumerate(ids)]
        blocks.append([ids[a:b] for a, b in zip(starts, starts[1:] + [len(ids)])])
    got = sorted(p for b in blocks for p in b)
    want = sorted(p[i: i + size] for p in pieces for i in range(0, len(p), size))
    assert got == want
    assert stats.tokens == sum(map(len, pieces)) and stats.blocks == len(blocks)
    assert stats.padding == size * len(blocks) - stats.tokens
    # best fit opens a block only when the piece fits no open one, so no two blocks could be merged
    fill = [sum(map(len, b)) for b in blocks]
    assert all(fill[i] + fill[j] > size for i in range(len(fill)) for j in range(i + 1, len(fill)))


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_pt_isolated_documents_see_only_themselves(tiny_tokenizer, arch):
    """Through the collator and transformers' own masking: each document's logits inside a packed
    batch equal its logits alone, and stream packing (the seed's layout) lets them differ."""
    import torch

    from conftest import build_tiny_model

    from adeptlm.train.common import PackedCollator

    tok = tiny_tokenizer
    model = build_tiny_model(arch, len(tok))  # in train mode, as the Trainer runs it
    docs = [Document("Hello world and more", "a:1"), Document("The quick brown fox jumps", "a:2"),
            Document("Two plus two", "a:3")]
    ds, _ = pack_documents(docs, tok, block_size=1000)
    batch = PackedCollator(tok)([ds[0]])
    assert "attention_mask" not in batch
    eot = end_of_text_id(tok)
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        stream = model(input_ids=batch["input_ids"]).logits[0]
        at = 0
        for d in docs:
            alone = torch.tensor([tok(d.text, add_special_tokens=False)["input_ids"] + [eot]])
            n = alone.shape[1]
            torch.testing.assert_close(packed[at:at + n], model(input_ids=alone).logits[0], atol=1e-5, rtol=1e-4)
            if at:
                assert not torch.allclose(stream[at:at + n], packed[at:at + n], atol=1e-3)
            at += n


def test_pt_end_of_text_is_a_special_token():
    """Gemma 3's vocabulary holds "</s>" as plain text (not special): documents close with <eos>."""
    from tokenizers import AddedToken

    from conftest import build_spm_tokenizer

    tok = build_spm_tokenizer(dummy_prefix=False)
    tok.add_tokens([AddedToken("</s>", special=False)])
    assert end_of_text_id(tok) == tok.eos_token_id != tok.convert_tokens_to_ids("</s>")
    tok.add_special_tokens({"additional_special_tokens": ["<|endoftext|>"]})
    assert end_of_text_id(tok) == tok.convert_tokens_to_ids("<|endoftext|>")


def test_pt_cache_rebuilt_when_the_data_changes(tmp_path, tiny_model_dir, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("The quick brown fox jumps over the lazy dog.\n\nHello world.\n")
    cache = tmp_path / "cache"
    flags = [*common_flags(tiny_model_dir, tmp_path / "out", steps=2), "--dataset_dir", str(corpus),
             "--data_cache_dir", str(cache), "--block_size", "16", "--validation_split_percentage", "0",
             "--overwrite_output_dir", "True"]
    assert main(["pt", *flags]) == 0
    first = read_run(tmp_path / "out")["data"]
    assert "tokenized corpus" in capsys.readouterr().out
    assert main(["pt", *flags]) == 0
    assert "loaded cached corpus" in capsys.readouterr().out
    (corpus / "a.txt").write_text("The quick brown fox jumps over the lazy dog.\n\nHello world. Two plus two.\n")
    assert main(["pt", *flags]) == 0
    assert "tokenized corpus" in capsys.readouterr().out
    second = read_run(tmp_path / "out")["data"]
    assert second["fingerprint"] != first["fingerprint"] and second["tokens"] > first["tokens"]
    assert len(list(cache.glob("pt-*"))) == 2
    hist = [h["loss"] for h in read_run(tmp_path / "out")["metrics"]["loss_history"]]
    assert all(torch.isfinite(torch.tensor(hist)))


def test_sft_truncation_is_counted_or_dropped(tmp_path, tiny_model_dir, capsys):
    long = {"instruction": "Say hello", "input": "", "output": "Hello world! " * 40}
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS + [long])
    out = tmp_path / "out"
    assert main(["sft", *common_flags(tiny_model_dir, out, steps=1), "--dataset_dir", str(data),
                 "--max_seq_length", "48"]) == 0
    text = capsys.readouterr().out
    assert "1 of 5 records are longer than 48 tokens and were truncated" in text and "train.jsonl:5" in text
    assert read_run(out)["data"]["train_records"] == 5
    out2 = tmp_path / "out2"
    assert main(["sft", *common_flags(tiny_model_dir, out2, steps=1), "--dataset_dir", str(data),
                 "--max_seq_length", "48", "--truncation", "drop"]) == 0
    assert read_run(out2)["data"]["train_records"] == 4


def test_validation_file_in_dataset_dir_is_not_trained_on(tmp_path, tiny_model_dir, capsys):
    d = tmp_path / "data"
    d.mkdir()
    write_jsonl(d / "train.jsonl", RECORDS)
    val = write_jsonl(d / "val.jsonl", RECORDS[:2])
    out = tmp_path / "out"
    assert main(["sft", *common_flags(tiny_model_dir, out, steps=2), "--dataset_dir", str(d),
                 "--validation_file", str(val)]) == 0
    assert "used for evaluation only, not trained on" in capsys.readouterr().out
    run = read_run(out)
    assert run["data"]["files"] == [str(d / "train.jsonl")]
    assert run["data"]["eval_records"] == 2 and run["metrics"]["eval_loss"] > 0


def test_yaml_config_with_flags_winning(tmp_path, tiny_model_dir):
    from adeptlm.train.args import parse_train_args

    cfg_file = tmp_path / "sft.yaml"
    cfg_file.write_text(f"model_name_or_path: {tiny_model_dir}\nlora_rank: 4\nlearning_rate: 0.001\n"
                        "evaluation_strategy: steps\ntrainable: q_proj,k_proj\n")
    cfg = parse_train_args("sft", [str(cfg_file), "--lora_rank", "16", "--output_dir", str(tmp_path / "o")])
    assert cfg.lora.lora_rank == 16 and cfg.training.learning_rate == 0.001
    assert cfg.lora.trainable == "q_proj,k_proj" and str(cfg.training.eval_strategy.value) == "steps"
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora_rnak: 4\n")
    from adeptlm.errors import AdeptError

    with pytest.raises(AdeptError, match="unknown option.*lora_rnak"):
        parse_train_args("sft", [str(bad)])


def test_bad_targets_and_missing_data_are_one_line(tmp_path, tiny_model_dir, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    rc = main(["sft", *common_flags(tiny_model_dir, tmp_path / "o", 1), "--dataset_dir", str(data),
               "--trainable", "q_proj,wq"])
    err = capsys.readouterr().err
    assert rc == 2 and "wq" in err and err.count("\n") == 1
    rc = main(["sft", *common_flags(tiny_model_dir, tmp_path / "o", 1), "--dataset_dir", str(tmp_path / "none")])
    assert rc == 2 and "no such file" in capsys.readouterr().err


def test_qlora_where_bitsandbytes_cannot_quantize_is_one_line(tmp_path, tiny_model_dir, capsys, monkeypatch):
    bnb = pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (pip install 'adeptlm[qlora]')")
    import bitsandbytes.functional

    def fails(*a, **k):
        raise RuntimeError("no kernel for this device")
    monkeypatch.setattr(bitsandbytes.functional, "quantize_4bit", fails)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    rc = main(["sft", *common_flags(tiny_model_dir, tmp_path / "o", 1), "--dataset_dir", str(data),
               "--load_in_kbits", "4"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"bitsandbytes {bnb.__version__}" in err and "no kernel" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_on_cpu_trains_over_quantized_layers_and_merges_like_peft(tmp_path, tiny_model_dir, bits):
    """bitsandbytes' CPU kernels: the adapter trains over 4-bit (nf4) or 8-bit linear layers, only LoRA
    weights are saved, and `adept merge` folds it into the full-precision base exactly as PEFT's own
    merge_and_unload does (the usual QLoRA merge)."""
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (pip install 'adeptlm[qlora]')")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    out = tmp_path / "qlora"
    assert main(["sft", *common_flags(tiny_model_dir, out, steps=12), "--dataset_dir", str(data),
                 "--load_in_kbits", str(bits), "--lora_rank", "8", "--lora_alpha", "16",
                 "--trainable", "q_proj,v_proj,o_proj,down_proj", "--learning_rate", "5e-2",
                 "--lr_scheduler_type", "constant"]) == 0
    run = read_run(out)
    assert run["metrics"]["quantized_linear_layers"] > 0 and run["config"]["load_in_kbits"] == bits
    hist = losses(out)
    assert all(torch.isfinite(torch.tensor(hist))) and sum(hist[-3:]) < sum(hist[:3]) - 1.0, hist
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)

    merged = tmp_path / "merged"
    assert main(["merge", "--base_model", str(tiny_model_dir), "--lora_model", str(out),
                 "--output_dir", str(merged)]) == 0
    ours = AutoModelForCausalLM.from_pretrained(merged).eval()
    theirs = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out)) \
        .merge_and_unload().eval()
    ids = torch.tensor([[1, 5, 9, 14, 3, 7, 2, 11]])
    with torch.no_grad():
        assert torch.allclose(ours(ids).logits, theirs(ids).logits, atol=1e-5)


@pytest.mark.parametrize("stage", ["pt", "sft"])
def test_shipped_configs_parse_with_seed_values(stage):
    from adeptlm.train.args import parse_train_args
    from conftest import ROOT

    cfg = parse_train_args(stage, [str(ROOT / "configs" / f"{stage}.yaml"), "--dataset_dir", "x"])
    assert cfg.lora.lora_rank == 64 and cfg.lora.lora_alpha == 128 and cfg.training.learning_rate == 1e-4
    assert cfg.lora.modules_to_save == "embed_tokens,lm_head" and cfg.data.dataset_dir == "x"
    assert cfg.training.bf16 is True and cfg.model.torch_dtype == "bfloat16"


def test_seed_flags_from_the_seed_scripts_parse():
    from adeptlm.train.args import parse_train_args

    cfg = parse_train_args("sft", ["--do_train", "--do_eval", "--low_cpu_mem_usage", "--seed", "7", "--bf16",
                                   "--warmup_ratio", "0.03", "--evaluation_strategy", "steps", "--eval_steps", "100",
                                   "--overwrite_output_dir", "--ddp_timeout", "30000", "--logging_first_step", "True",
                                   "--load_in_kbits", "16", "--torch_dtype", "bfloat16"])
    assert cfg.training.warmup_steps == 0.03 and cfg.training.seed == 7 and cfg.compat.overwrite_output_dir
    assert str(cfg.training.eval_strategy.value) == "steps"


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("items", [None, 11])
def test_trained_positions_loss_equals_the_stock_loss_and_gradients(tmp_path, tiny_tokenizer, arch, items):
    """AdeptTrainer's loss (LM head at trained positions only) equals transformers' own, gradients too."""
    from peft import LoraConfig, get_peft_model
    from transformers import TrainingArguments

    from adeptlm.train.common import _trainer_class
    from adeptlm.train.cpu.loss import decoder_and_head
    from conftest import build_tiny_model

    model = get_peft_model(build_tiny_model(arch, len(tiny_tokenizer)),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                      modules_to_save=["lm_head"], init_lora_weights=False))
    ids = torch.randint(5, len(tiny_tokenizer), (3, 12))
    labels = ids.clone()
    labels[0, :5] = labels[1, :2] = -100  # prompts
    labels[2, 9:] = -100  # padding
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    assert decoder_and_head(model) is not None  # the fast path is the one under test
    trainer = _trainer_class()(model=model, args=TrainingArguments(str(tmp_path), use_cpu=True, report_to=[]))
    n = None if items is None else torch.tensor(items)
    fast = trainer.compute_loss(model, dict(batch), num_items_in_batch=n)
    fast.backward()
    fast_grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    stock = super(type(trainer), trainer).compute_loss(model, dict(batch), num_items_in_batch=n)
    stock.backward()
    assert torch.allclose(fast, stock, atol=1e-5, rtol=1e-5)
    for k, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(fast_grads[k], p.grad, atol=1e-5, rtol=1e-4), k


def test_step_divisor_is_the_epoch_mean_of_trained_tokens(tmp_path, tiny_model_dir):
    """Each step's summed loss is divided by the epoch's trained tokens per step, not the step's own count."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainingArguments

    from adeptlm.train.common import _trainer_class

    # trained labels (position 0 never counts: the loss shifts labels): 3, 1, 6 and 2 tokens
    rows = [[-100, 5, 6, 7], [-100, -100, 9], [-100, 1, 2, 3, 4, 5, 6], [7, -100, 8, 9]]
    ds = Dataset.from_dict({"input_ids": [[1] * len(r) for r in rows], "labels": rows})
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    args = TrainingArguments(str(tmp_path), use_cpu=True, report_to=[], per_device_train_batch_size=3)
    trainer = _trainer_class()(model=model, args=args, train_dataset=ds)
    batch = {"labels": torch.tensor([[-100, 5, 6, 7], [-100, -100, 9, -100]])}
    # 12 trained tokens over ceil(4 / 3) = 2 steps: 6, whatever this batch holds (4)
    assert float(trainer._get_num_items_in_batch([batch], torch.device("cpu"))) == 6.0
    model.eval()  # evaluation keeps the per-batch count
    assert float(trainer._get_num_items_in_batch([batch], torch.device("cpu"))) == 4.0


def test_gpu_defaults_and_liger_refusal(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """On a CUDA machine bf16 is the default where the GPU has it (and a LoRA's frozen base loads in
    bfloat16); on CPU nothing changes; --use_liger_kernel without Liger-Kernel is one line."""
    import importlib.util

    from adeptlm.train.args import gpu_defaults, parse_train_args
    from adeptlm.train.common import base_dtype

    assert gpu_defaults(cuda=True, bf16_supported=True) == {"bf16": True}
    assert gpu_defaults(cuda=True, bf16_supported=False) == {"bf16": False} == gpu_defaults(cuda=False)
    cfg = parse_train_args("sft", ["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path)])
    assert cfg.training.bf16 is False and base_dtype(cfg) == "float32"           # this machine: CPU
    # TRL's configs turn an unset bf16 into True, on a CPU too: every stage trains in fp32 here
    from adeptlm.train.stages import stages

    for st in stages():
        cfg = parse_train_args(st.name, ["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path)])
        assert cfg.training.bf16 is False, st.name
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    cfg.training.bf16, cfg.training.use_cpu = True, False
    assert base_dtype(cfg) == "bfloat16"
    cfg.lora.full_finetuning = True
    assert base_dtype(cfg) == "float32"                                           # full weights train in fp32
    monkeypatch.undo()
    if importlib.util.find_spec("liger_kernel") is None:
        data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
        code = main(["sft", *common_flags(tiny_model_dir, tmp_path / "o", steps=1), "--dataset_dir", str(data),
                     "--use_liger_kernel", "True"])
        assert code == 2 and "--use_liger_kernel needs Liger-Kernel" in capsys.readouterr().err


def test_resume_skips_a_checkpoint_cut_short(tmp_path):
    """A checkpoint without trainer_state.json (written last by the Trainer) was cut short by a full disk
    or a kill while saving: training resumes from the newest whole one, or afresh."""
    from types import SimpleNamespace

    from adeptlm.train.common import resume_point

    cfg = SimpleNamespace(training=SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=None),
                          compat=SimpleNamespace(overwrite_output_dir=False))
    for step, whole in ((2, True), (10, True), (12, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if whole:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert resume_point(cfg) == str(tmp_path / "checkpoint-10")
    (tmp_path / "checkpoint-12" / "trainer_state.json").write_text("{}")
    assert resume_point(cfg) == str(tmp_path / "checkpoint-12")
    for step in (2, 10, 12):
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").unlink()
    assert resume_point(cfg) is None


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_padding_free_records_see_only_themselves(tiny_tokenizer, arch):
    """--padding_free: through the collator and transformers' own masking, each record's logits in the
    one-row batch equal its logits alone; each record's first label is untrained (it would be
    predicted from the record before); distill masks travel along."""
    from conftest import build_tiny_model

    from adeptlm.train.common import FlatCollator

    model = build_tiny_model(arch, len(tiny_tokenizer))
    lengths = [7, 12, 5]
    feats = [{"input_ids": torch.randint(5, len(tiny_tokenizer), (n,)).tolist(), "labels": list(range(10, 10 + n)),
              "distill": [k % 2] * n} for k, n in enumerate(lengths)]
    batch = FlatCollator()(feats)
    assert batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in batch
    assert batch["labels"][0].tolist() == [x for n in lengths for x in [-100] + list(range(11, 10 + n))]
    assert batch["distill"][0].tolist() == [0] * 7 + [1] * 12 + [0] * 5
    with torch.no_grad():
        flat = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        stream = model(input_ids=batch["input_ids"]).logits[0]
        at = 0
        for f in feats:
            n = len(f["input_ids"])
            alone = model(input_ids=torch.tensor([f["input_ids"]])).logits[0]
            torch.testing.assert_close(flat[at:at + n], alone, atol=1e-5, rtol=1e-4)
            if at:   # without the restarting positions, the records would see each other
                assert not torch.allclose(stream[at:at + n], alone, atol=1e-3)
            at += n


@pytest.mark.parametrize("distill", [False, True])
def test_padding_free_sft_trains_as_padded_batches(tmp_path, tiny_model_dir, distill):
    """`adept sft --padding_free True` gives the loss history of padded batches, step for step (the same
    records per step, the same divisor), with and without distilled records."""
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    extra = ["--distill_file", str(write_jsonl(tmp_path / "general.jsonl", RECORDS[1:3])),
             "--distill_weight", "3"] if distill else []
    runs = {}
    for flat in (False, True):
        out = tmp_path / f"out-{flat}"
        assert main(["sft", *common_flags(tiny_model_dir, out, steps=4), "--dataset_dir", str(data),
                     "--padding_free", str(flat), "--lora_rank", "4", "--lora_alpha", "8", *extra]) == 0
        runs[flat] = losses(out)
    assert len(runs[True]) == 4
    torch.testing.assert_close(torch.tensor(runs[True]), torch.tensor(runs[False]), atol=1e-5, rtol=1e-4)
