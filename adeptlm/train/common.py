"""What pt, sft and dpo share: loading the model for training (LoRA, QLoRA, full), the collator,
the Trainer with progress and resume, and the outputs (adapter, tokenizer, run.json)."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from ..errors import AdeptError
from ..models import adapter_base, load_tokenizer, resolve_model
from ..runrecord import read_run, write_run
from .args import TrainConfig
from .stages import get as get_stage


def is_main_process() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


def log(msg: str) -> None:
    if is_main_process():
        print(f"adept: {msg}", flush=True)


def split_names(value: str | None) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


def load_model_for_training(cfg: TrainConfig):
    """(model, tokenizer) ready for the Trainer: LoRA (default), QLoRA (--load_in_kbits 4|8) or full weights."""
    import torch
    from transformers import AutoModelForCausalLM, set_seed

    # Seed before the adapter is created: the Trainer seeds only later, after LoRA's random init.
    set_seed(cfg.training.seed)
    path = resolve_model(cfg.model.model_name_or_path)
    if adapter_base(path) is not None:
        raise AdeptError(f"{path} is a LoRA adapter: pass its base as --model_name_or_path and the adapter "
                         "as --peft_path, or merge it first with `adept merge`")
    tokenizer = load_tokenizer(cfg.model.tokenizer_name_or_path or path)
    lora = cfg.lora
    if not lora.full_finetuning and not lora.peft_path:
        _check_targets(path, split_names(lora.trainable) + split_names(lora.modules_to_save))
    quant = None
    if lora.load_in_kbits in (4, 8):
        quant = _kbit_config(cfg)
        if lora.full_finetuning:
            raise AdeptError("--full_finetuning cannot train quantized weights: use --load_in_kbits 16")
    dtype_name = cfg.model.torch_dtype or base_dtype(cfg)
    dtype = "auto" if dtype_name == "auto" else getattr(torch, dtype_name)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, quantization_config=quant)
    model.config.use_cache = False
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        log(f"resizing embeddings from {model.get_input_embeddings().weight.shape[0]} to {len(tokenizer)} tokens")
        model.resize_token_embeddings(len(tokenizer))
    if lora.full_finetuning:
        for p in model.parameters():
            p.requires_grad_(True)
        return model, tokenizer
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    from .cpu.dropout import use_fast_dropout
    from .cpu.lorafast import use_lean_lora

    if quant is not None:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.training.gradient_checkpointing)
    if lora.peft_path:
        model = PeftModel.from_pretrained(model, lora.peft_path, is_trainable=True)
    else:
        targets = split_names(lora.trainable)
        to_save = split_names(lora.modules_to_save) or None
        tied = bool(getattr(model.config, "tie_word_embeddings", False)) or \
            bool(getattr(model.config.get_text_config(), "tie_word_embeddings", False))
        config = LoraConfig(
            task_type="CAUSAL_LM", r=lora.lora_rank, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
            target_modules=targets, modules_to_save=to_save, use_rslora=lora.use_rslora,
            # with tied input/output embeddings, one trained copy must serve both
            ensure_weight_tying=bool(tied and to_save and {"embed_tokens", "lm_head"} & set(to_save)))
        model = get_peft_model(model, config)
    from .cpu.switch import kernels_on

    if kernels_on(cfg):
        use_fast_dropout(model)
        use_lean_lora(model)
    if cfg.training.gradient_checkpointing:
        model.enable_input_require_grads()
    return model, tokenizer


def base_dtype(cfg: TrainConfig) -> str:
    """The weights' dtype when --torch_dtype is not given: on a GPU in bf16 mixed precision a LoRA's frozen
    base is loaded in bfloat16 (half the memory, the dtype its matmuls run in under autocast anyway; PEFT
    keeps the adapter in float32), as LLaMA-Factory and TRL's examples do; otherwise float32."""
    t = cfg.training
    on_gpu = not getattr(t, "use_cpu", False)
    if on_gpu and t.bf16 and not cfg.lora.full_finetuning and cfg.lora.load_in_kbits == 16:
        import torch

        if torch.cuda.is_available():
            return "bfloat16"
    return "float32"


def _check_targets(path: Path, wanted: list[str]) -> None:
    """Fail before loading any weights when --trainable/--modules_to_save name absent modules."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        # from_config would partition even a meta skeleton under ZeRO-3 (zero.Init); PEFT names the
        # missing modules itself when the adapter is made
        return
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    names = {n.rsplit(".", 1)[-1] for n, _ in skeleton.named_modules()}
    missing = [t for t in wanted if t not in names]
    if missing:
        raise AdeptError(f"--trainable/--modules_to_save name modules this model lacks: {', '.join(missing)} "
                         f"(it has e.g. {', '.join(sorted(n for n in names if n.endswith('proj'))[:8])})")


def _kbit_config(cfg: TrainConfig):
    import torch

    try:
        import bitsandbytes
    except ImportError:
        raise AdeptError(f"--load_in_kbits {cfg.lora.load_in_kbits} needs bitsandbytes, which is not installed "
                         "(pip install 'adeptlm[qlora]'); use --load_in_kbits 16") from None
    if not torch.cuda.is_available():
        # bitsandbytes has CPU kernels for its 4- and 8-bit layers in recent releases (tested with 0.50.2);
        # an older one fails here, in one small quantisation, rather than deep inside model loading
        try:
            from bitsandbytes.functional import quantize_4bit
            quantize_4bit(torch.ones(64, 64), quant_type=cfg.lora.quant_type)
        except Exception as exc:
            raise AdeptError(f"--load_in_kbits {cfg.lora.load_in_kbits}: bitsandbytes {bitsandbytes.__version__} "
                             f"cannot quantize on this CPU ({type(exc).__name__}: {str(exc)[:120]}); install "
                             "bitsandbytes>=0.50 or use --load_in_kbits 16") from None
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if cfg.training.bf16 else torch.float16 if cfg.training.fp16 else torch.float32
    skip = split_names(cfg.lora.modules_to_save)
    if cfg.lora.load_in_kbits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute,
                                  bnb_4bit_use_double_quant=cfg.lora.double_quant,
                                  bnb_4bit_quant_type=cfg.lora.quant_type, llm_int8_skip_modules=skip or None)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=6.0, llm_int8_skip_modules=skip or None)


class PadCollator:
    """Pads input_ids with the pad token and labels with -100, per batch (to the longest in it)."""

    def __init__(self, tokenizer):
        from transformers import DataCollatorForSeq2Seq

        self.inner = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding="longest")

    def __call__(self, features):
        batch = self.inner([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])
        if "distill" in features[0]:    # --distill_file: which positions are held to the base (train/kl.py)
            import torch

            width = batch["input_ids"].shape[1]
            batch["distill"] = torch.tensor([list(f["distill"]) + [0] * (width - len(f["distill"])) for f in features])
        return batch


class PackedCollator:
    """Batches packed blocks that carry position_ids (pack_documents with isolate=True): input_ids
    padded with the pad token, labels with -100, position_ids with 0, and no attention mask, so that
    transformers derives the block-diagonal attention from the position_ids. Padding sits at the end
    of the last block, where causal attention keeps it out of sight of every real token."""

    def __init__(self, tokenizer):
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __call__(self, features):
        import torch

        width = max(len(f["input_ids"]) for f in features)

        def column(key, fill):
            return torch.tensor([list(f[key]) + [fill] * (width - len(f[key])) for f in features], dtype=torch.long)

        # use_cache=False: with a cache (the default, even in training) transformers 5.x skips the
        # packed-sequence detection and attends across documents
        return {"input_ids": column("input_ids", self.pad), "labels": column("labels", -100),
                "position_ids": column("position_ids", 0), "use_cache": False}


class FlatCollator:
    """Padding-free batches for SFT (--padding_free): transformers' DataCollatorWithFlattening lays the
    batch's records end to end in one row, position_ids restarting at 0 for each and each record's
    first label -100 (the loss shifts labels: that position would be trained on the record before),
    with no attention mask, so that transformers derives each record's own causal attention from the
    position_ids (as for PackedCollator's blocks). Added here: the --distill_file masks, laid out the
    same way, and use_cache=False."""

    def __init__(self):
        from transformers import DataCollatorWithFlattening

        self.inner = DataCollatorWithFlattening(return_tensors="pt")

    def __call__(self, features):
        import torch

        features = [f for f in features if len(f["input_ids"])]     # as the inner collator keeps them
        batch = dict(self.inner([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]))
        batch["use_cache"] = False      # as PackedCollator: with a cache transformers attends across records
        if "distill" in features[0]:
            batch["distill"] = torch.tensor([[x for f in features for x in f["distill"]]], dtype=torch.long)
        return batch


def _trainer_class(speed: bool = True, epoch_divisor: bool = True, seeded_sampler: bool = True):
    """The Trainer with what was asked of it: the LM head and loss at trained positions (speed only,
    cpu/trainer.py), the epoch-constant loss divisor and the epoch-seeded length sampler (each changes
    what is trained, so each has its own flag: --loss_divisor, --length_sampler; semantics.py)."""
    from transformers import Trainer

    from .semantics import EpochDivisor, SeededSampler

    # the divisor first: its compute_loss wraps whichever loss runs below it
    bases = [c for c, on in ((EpochDivisor, epoch_divisor), (SeededSampler, seeded_sampler)) if on]
    if speed:
        from .cpu.trainer import TrainedPositionsLoss

        bases.append(TrainedPositionsLoss)
    if not bases:
        return Trainer
    return type("AdeptTrainer", tuple(bases), {})


def _progress_callback():
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """One line per log step: loss, trained tokens per second, ETA."""

        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.step0, self.tok0 = time.time(), state.global_step, state.num_input_tokens_seen

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            elapsed = max(time.time() - self.t0, 1e-9)
            done = state.global_step - self.step0
            rate = (state.num_input_tokens_seen - self.tok0) / elapsed
            eta = elapsed / done * (state.max_steps - state.global_step) if done else float("nan")
            print(f"adept: step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                  f"{rate:.1f} tokens/s ETA {_fmt(eta)}", flush=True)

    return Progress()


def _quiet_console(trainer, verbose: bool) -> None:
    """One line per logging step: adeptlm's step line. The Trainer's own callbacks write the metrics
    dict at every logging step (under its bar, or alone when the bar is off), and in a log file the bar
    is a run of carriage returns: unless --verbose, both go. (A terminal-only bar carrying the loss was
    tried and printed nothing at all under transformers 5.25: its tqdm stayed silent, cause not traced.)"""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if not verbose:
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)


def _fmt(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def resume_point(cfg: TrainConfig) -> str | None:
    """The checkpoint to resume from: the one asked for, else the newest in output_dir (unless overwriting)."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(cfg.training.output_dir)
    if cfg.training.resume_from_checkpoint:
        return cfg.training.resume_from_checkpoint
    if not out.is_dir():
        return None
    if cfg.compat.overwrite_output_dir:
        if is_main_process():
            for old in out.glob("checkpoint-*"):
                shutil.rmtree(old, ignore_errors=True)
            (out / "run.json").unlink(missing_ok=True)
        return None
    last = get_last_checkpoint(str(out))
    # a checkpoint cut short (a full disk, a kill while saving) has no trainer_state.json, which the
    # Trainer writes after the weights and optimizer: resume from the newest whole one instead
    steps = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit()
                   else -1, reverse=True)
    whole = next((str(p) for p in steps if (p / "trainer_state.json").is_file()), None)
    if last and whole != last:
        log(f"{last} is incomplete (no trainer_state.json): " + (f"resuming from {whole}" if whole else "starting afresh"))
        last = whole
    elif last:
        log(f"resuming from {last} (pass --overwrite_output_dir to start afresh)")
    return last


def _plain(value):
    """A config value as JSON holds it (TRL keeps some as lists or enums)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def finished_at(checkpoint: str, args) -> bool:
    """Whether the checkpoint is the end of the run these arguments ask for (same step or epoch target).
    transformers 5.24's Trainer, resumed from such a checkpoint, trains one step more than asked."""
    import json

    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    if args.max_steps > 0:
        return state.get("global_step", 0) >= args.max_steps
    return state.get("num_train_epochs") == args.num_train_epochs and \
        state.get("global_step", 0) >= state.get("max_steps", float("inf"))


def train_and_save(cfg: TrainConfig, stage: str, model, tokenizer, train_ds, eval_ds, data_info: dict,
                   collator=None, trainer_class=None) -> dict:
    """Run the Trainer (resuming when there is a checkpoint), save the model and write run.json.

    trainer_class: another Trainer (TRL's DPOTrainer) built with the same arguments and no collator."""
    args = cfg.training
    if args.include_num_input_tokens_seen in (False, "no", None):
        args.include_num_input_tokens_seen = "non_padding"
    resume = resume_point(cfg)
    done = read_run(args.output_dir)
    if resume and done is not None and done.get("stage") == stage and finished_at(resume, args):
        log(f"{args.output_dir} holds this run, finished ({Path(resume).name} and run.json): nothing left to train "
            "(pass --overwrite_output_dir True to train again)")
        return done["metrics"]
    from .cpu.switch import kernels_on
    from .semantics import semantics

    fast = kernels_on(cfg)
    epoch_divisor, seeded = semantics(cfg, fast)
    if trainer_class is None:
        chosen = _trainer_class(speed=fast, epoch_divisor=epoch_divisor, seeded_sampler=seeded)
        distill = getattr(cfg.data, "distill_file", None)
        if cfg.lora.kl_to_base or distill:
            from .kl import kl_to_base_trainer

            chosen = kl_to_base_trainer(chosen, float(cfg.lora.kl_to_base), float(cfg.lora.distill_weight) if distill else 0.0)
            terms = [f"{cfg.lora.kl_to_base:g} x KL(base || tuned) per trained token"] if cfg.lora.kl_to_base else []
            terms += [f"{cfg.lora.distill_weight:g} x mean KL(base || tuned) per distilled position"] if distill else []
            log("loss: cross-entropy + " + " + ".join(terms))
        trainer = chosen(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                   data_collator=collator or PadCollator(tokenizer), processing_class=tokenizer,
                                   callbacks=[_progress_callback()])
    else:
        trainer = trainer_class(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                processing_class=tokenizer, callbacks=[_progress_callback()])
    _quiet_console(trainer, cfg.compat.verbose)
    from .cpu_fsdp import enable as enable_cpu_fsdp

    if enable_cpu_fsdp(trainer, cfg.compat.cpu_fsdp):
        log("FSDP on CPU processes: parameters sharded over gloo (FSDP2)")
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    metrics = {"train_loss": result.training_loss, "train_runtime_s": round(time.time() - t0, 2),
               "global_step": trainer.state.global_step,
               "trained_tokens_seen": int(trainer.state.num_input_tokens_seen), "cpu_kernels": fast}
    if trainer_class is None:       # TRL's trainers keep their own
        metrics.update(loss_divisor="epoch" if epoch_divisor else "step", length_sampler="seeded" if seeded else "stock")
    metrics["distributed"] = {"type": str(trainer.accelerator.distributed_type).split(".")[-1],
                              "processes": trainer.accelerator.num_processes, "fsdp": bool(trainer.is_fsdp_enabled),
                              "deepspeed": bool(trainer.is_deepspeed_enabled)}
    quantized = sum(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in model.modules())
    if quantized:       # QLoRA: how many linear layers the adapter was trained over in 4 or 8 bits
        metrics["quantized_linear_layers"] = quantized
    metrics["loss_history"] = [{"step": h["step"], "loss": h["loss"],
                                **{k: h[k] for k in ("kl_to_base", "distill_kl") if k in h}}
                               for h in trainer.state.log_history if "loss" in h]
    # the method, its settings, and what its trainer logs per step beyond the loss (DPO's reward accuracy
    # and margins, KTO's KL estimate, ...): their history and last values
    st = get_stage(stage)
    metrics["method"] = {"name": stage, **{k: _plain(getattr(args, k, None)) for k in st.settings}}
    history = [{"step": h["step"], **{k: h[k] for k in st.metrics if k in h}} for h in trainer.state.log_history
               if "loss" in h and any(k in h for k in st.metrics)]
    if history:
        metrics["method_history"] = history
        metrics.update({k.replace("/", "_"): history[-1][k] for k in st.metrics if k in history[-1]})
    if eval_ds is not None and len(eval_ds):
        ev = trainer.evaluate()
        metrics["eval_loss"] = ev["eval_loss"]
        metrics["eval_perplexity"] = math.exp(ev["eval_loss"]) if ev["eval_loss"] < 50 else float("inf")
    out = Path(args.output_dir)
    trained = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in (getattr(trained, "peft_config", None) or {}):
        # TRL's frozen copy of a --peft_path adapter, DPO's reference: not part of the result
        trained.delete_adapter("ref")
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out))
        write_run(out, stage, cfg.as_dict(), metrics, data=data_info,
                  adapter=not cfg.lora.full_finetuning,
                  base_model=str(resolve_model(cfg.model.model_name_or_path)))
        log(f"saved {'adapter' if not cfg.lora.full_finetuning else 'model'} and run.json to {out}")
    return metrics
