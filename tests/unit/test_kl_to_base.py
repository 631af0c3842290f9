"""`--kl_to_base`: its KL is KL(base ‖ tuned) at the trained tokens, computed by hand from full
logits; 0 trains the very adapter trained without the flag; a positive value keeps the tuned model
nearer the base (smaller KL on the training records) than the same run without it."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from adeptlm.cli import main
from adeptlm.runrecord import read_run
from adeptlm.train.cpu.loss import decoder_and_head
from adeptlm.train.kl import kl_terms
from conftest import build_tiny_model
from test_train import RECORDS, common_flags, write_jsonl


def _tiny_lora(tokenizer):
    """A tiny llama with a randomly initialised LoRA adapter (so that tuned and base differ)."""
    torch.manual_seed(0)
    base = build_tiny_model("llama", len(tokenizer))
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))


def test_kl_terms_equal_a_hand_computation(tiny_tokenizer):
    model = _tiny_lora(tiny_tokenizer)
    ids = torch.randint(0, len(tiny_tokenizer), (2, 12))
    labels = ids.clone()
    labels[0, :5] = -100
    labels[1, :8] = -100
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    ce, kl, n = kl_terms(model, *decoder_and_head(model), inputs)
    logits = model(input_ids=ids).logits[:, :-1]
    with model.disable_adapter():
        ref = model(input_ids=ids).logits[:, :-1]
    keep = labels[:, 1:] != -100
    lp, lb = torch.log_softmax(logits[keep], -1), torch.log_softmax(ref[keep], -1)
    want_kl = torch.nn.functional.kl_div(lp, lb, log_target=True, reduction="sum")   # KL(base || tuned)
    want_ce = torch.nn.functional.cross_entropy(logits[keep], labels[:, 1:][keep], reduction="sum")
    assert n == int(keep.sum()) == 11
    torch.testing.assert_close(kl, want_kl, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ce, want_ce, atol=1e-5, rtol=1e-5)
    assert kl > 0
    kl.backward()       # the KL term has a gradient into the adapter, none into the frozen base
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n_, p in model.named_parameters() if "lora_" in n_)


def _train(tmp_path, model_dir, name, *extra):
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    out = tmp_path / name
    assert main(["sft", *common_flags(model_dir, out, steps=6), "--dataset_dir", str(data), "--lora_rank", "8",
                 "--lora_alpha", "16", "--trainable", "q_proj,v_proj", "--learning_rate", "5e-2", *extra]) == 0
    return out


def test_zero_is_no_flag_and_a_positive_beta_stays_nearer_the_base(tmp_path, tiny_model_dir):
    plain = load_file(_train(tmp_path, tiny_model_dir, "plain") / "adapter_model.safetensors")
    zero = load_file(_train(tmp_path, tiny_model_dir, "zero", "--kl_to_base", "0") / "adapter_model.safetensors")
    assert plain.keys() == zero.keys() and all(torch.equal(plain[k], zero[k]) for k in plain)
    braked = _train(tmp_path, tiny_model_dir, "braked", "--kl_to_base", "5")
    hist = read_run(braked)["metrics"]["loss_history"]
    assert all("kl_to_base" in h for h in hist) and hist[-1]["kl_to_base"] >= 0

    # on the training records, the braked adapter's KL to the base is smaller than the plain one's
    from adeptlm.models import load_model

    def mean_kl(out):
        model, tok = load_model(str(out))
        enc = tok([r["output"] for r in RECORDS], return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        with torch.no_grad():
            _, kl, n = kl_terms(model, *decoder_and_head(model), {**enc, "labels": labels})
        return float(kl) / n

    assert mean_kl(braked) < mean_kl(tmp_path / "plain")


def test_kl_to_base_refused_with_full_finetuning(tmp_path, tiny_model_dir, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    code = main(["sft", *common_flags(tiny_model_dir, tmp_path / "o", steps=1), "--dataset_dir", str(data),
                 "--full_finetuning", "True", "--kl_to_base", "0.1"])
    assert code == 2 and "--kl_to_base needs a LoRA adapter" in capsys.readouterr().err


def test_negative_beta_is_refused(tmp_path, tiny_model_dir, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    code = main(["sft", *common_flags(tiny_model_dir, tmp_path / "o", steps=1), "--dataset_dir", str(data),
                 "--kl_to_base", "-1"])
    assert code == 2 and "--kl_to_base" in capsys.readouterr().err


def test_distill_terms_equal_a_hand_computation(tiny_tokenizer):
    """--distill_file's term: KL(base || tuned) of the next-token distribution at every marked position."""
    model = _tiny_lora(tiny_tokenizer)
    ids = torch.randint(0, len(tiny_tokenizer), (2, 10))
    labels = torch.full_like(ids, -100)
    labels[0, 6:] = ids[0, 6:]              # row 0 trained on its last tokens, row 1 distilled whole
    distill = torch.zeros_like(ids)
    distill[1, :] = 1
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    ce, kl, n, dkl, dn = kl_terms(model, *decoder_and_head(model), inputs, distill)
    logits = model(input_ids=ids).logits
    with model.disable_adapter():
        ref = model(input_ids=ids).logits
    want = torch.nn.functional.kl_div(torch.log_softmax(logits[1], -1), torch.log_softmax(ref[1], -1),
                                      log_target=True, reduction="sum")
    assert (n, dn) == (4, 10) and dkl > 0
    torch.testing.assert_close(dkl, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(logits[0, 5:9], ids[0, 6:], reduction="sum"),
                               atol=1e-5, rtol=1e-5)


GENERAL = [{"instruction": f"Tell me about the number {i}.", "input": "", "output": f"The number {i} comes after {i - 1}."}
           for i in range(2, 10)]


def test_distilled_records_stay_nearer_the_base_than_trained_ones(tmp_path, tiny_model_dir):
    """The same general records, trained on their words (replay) or distilled (--distill_file): the
    distilled adapter's KL to the base on them is the smaller, and run.json logs the term."""
    general = write_jsonl(tmp_path / "general.jsonl", GENERAL)
    data_dir = tmp_path / "both"
    data_dir.mkdir()
    write_jsonl(data_dir / "subject.jsonl", RECORDS)
    write_jsonl(data_dir / "general.jsonl", GENERAL)

    def train(name, data, *extra):
        out = tmp_path / name
        assert main(["sft", *common_flags(tiny_model_dir, out, steps=8), "--dataset_dir", str(data), "--lora_rank", "8",
                     "--lora_alpha", "16", "--trainable", "q_proj,v_proj", "--learning_rate", "5e-2", *extra]) == 0
        return out

    replayed = train("replayed", data_dir)
    distilled = train("distilled", data_dir / "subject.jsonl", "--distill_file", str(general), "--distill_weight", "5")
    run = read_run(distilled)
    assert run["data"]["distilled_records"] == len(GENERAL) and run["data"]["records"] == len(RECORDS)
    assert any("distill_kl" in h for h in run["metrics"]["loss_history"])

    from adeptlm.models import load_model

    def mean_kl(out):
        model, tok = load_model(str(out))
        enc = tok([r["instruction"] + " " + r["output"] for r in GENERAL], return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        with torch.no_grad():
            _, kl, n = kl_terms(model, *decoder_and_head(model), {**enc, "labels": labels})
        return float(kl) / n

    assert mean_kl(distilled) < mean_kl(replayed)


def test_distill_file_refused_where_it_cannot_apply(tmp_path, tiny_model_dir, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    code = main(["sft", *common_flags(tiny_model_dir, tmp_path / "o", steps=1), "--dataset_dir", str(data),
                 "--full_finetuning", "True", "--distill_file", str(data)])
    assert code == 2 and "--distill_file needs a LoRA adapter" in capsys.readouterr().err
    code = main(["pt", *common_flags(tiny_model_dir, tmp_path / "p", steps=1), "--dataset_dir", str(data),
                 "--distill_file", str(data)])
    assert code == 2 and "--distill_file is not an option of adept pt" in capsys.readouterr().err
