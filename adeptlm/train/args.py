"""Training configuration: typed dataclasses, a YAML file and command-line flags (flags win).

The seed's flag names work as written (`--lora_rank`, `--trainable`, `--modules_to_save`,
`--block_size`, `--load_in_kbits`, `--full_finetuning`, `--peft_path`, ...), and so does every
Hugging Face TrainingArguments flag. A few seed flags that transformers 5 removed are kept here:
`--overwrite_output_dir`, `--evaluation_strategy` (now `--eval_strategy`), `--warmup_ratio` (now a
fractional `--warmup_steps`) and `--group_by_length`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

from ..config import read_yaml_mapping
from ..errors import AdeptError
from .stages import get as get_stage


@dataclass
class ModelArguments:
    model_name_or_path: str = field(default="smollm2-135m-instruct", metadata={
        "help": "base model: a name from `adept models`, a local Hugging Face directory or a .gguf file"})
    tokenizer_name_or_path: Optional[str] = field(default=None, metadata={
        "help": "tokenizer source (default: the model's own)"})
    torch_dtype: Optional[str] = field(default=None, metadata={
        "help": "dtype the weights are loaded in: auto, bfloat16, float16, float32 (default float32)",
        "choices": ["auto", "bfloat16", "float16", "float32"]})
    low_cpu_mem_usage: bool = field(default=False, metadata={
        "help": "accepted for seed compatibility; transformers 5 always loads with low memory"})
    template: Optional[str] = field(default=None, metadata={
        "help": "chat template for SFT: auto (the tokenizer's own), chatml, llama3, alpaca or a .jinja file"})


@dataclass
class DataArguments:
    dataset_dir: Optional[str] = field(default=None, metadata={
        "help": "training data: a directory of files or one file (its kind: see this command's description)"})
    data_cache_dir: Optional[str] = field(default=None, metadata={
        "help": "where tokenized data is cached, keyed by a fingerprint of files, tokenizer and settings "
                "(default: <output_dir>/data_cache)"})
    validation_split_percentage: float = field(default=0.05, metadata={
        "help": "share of blocks held out for evaluation, as a FRACTION like the seed (0.05 = 5%%); 0 for none"})
    validation_file: Optional[str] = field(default=None, metadata={
        "help": "a file of evaluation records; if it also sits in dataset_dir it is left out of training"})
    block_size: Optional[int] = field(default=None, metadata={
        "help": "tokens per training block (default min(1024, model max length))"})
    packing: str = field(default="documents", metadata={
        "help": "documents (whole documents packed into blocks by best fit, cut only when longer than a "
                "block; each attends only to itself, as inference sees text; its first token is not trained) "
                "or stream (documents joined and cut every block_size tokens, blocks attending across "
                "documents, as the seed's group_texts)", "choices": ["documents", "stream"]})
    max_seq_length: int = field(default=1024, metadata={"help": "longest record in tokens"})
    max_prompt_length: Optional[int] = field(default=None, metadata={
        "help": "drop (and count) pairs whose rendered prompt is longer than this many tokens"})
    truncation: str = field(default="truncate", metadata={
        "help": "over-long records are truncated (counted and reported) or dropped",
        "choices": ["truncate", "drop"]})
    preprocessing_num_workers: Optional[int] = field(default=None, metadata={
        "help": "processes used to tokenize (datasets.map num_proc)"})
    distill_file: Optional[str] = field(default=None, metadata={
        "help": "with LoRA: instruction records of general text (e.g. the base model's own answers to general "
                "questions) trained toward the base model's whole next-token distribution at every position "
                "instead of on their words (Learning without Forgetting; adeptlm/train/kl.py)"})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "use only the first N records/blocks"})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "evaluate on at most N records/blocks"})


@dataclass
class LoraArguments:
    trainable: str = field(default="q_proj,v_proj", metadata={
        "help": "comma-separated module names that get LoRA adapters (seed: q_proj,v_proj,k_proj,o_proj,"
                "gate_proj,down_proj,up_proj)"})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank r"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA alpha; the update is scaled by alpha/r"})
    lora_dropout: float = field(default=0.1, metadata={"help": "dropout on the LoRA input"})
    modules_to_save: Optional[str] = field(default=None, metadata={
        "help": "comma-separated modules trained in full beside LoRA, e.g. embed_tokens,lm_head (kept tied "
                "when the model ties them)"})
    use_rslora: bool = field(default=False, metadata={"help": "rank-stabilised LoRA: scale alpha/sqrt(r)"})
    full_finetuning: bool = field(default=False, metadata={"help": "train all weights instead of LoRA"})
    peft_path: Optional[str] = field(default=None, metadata={"help": "continue training this LoRA adapter"})
    kl_to_base: float = field(default=0.0, metadata={
        "help": "with LoRA: add BETA x KL(base || tuned) at every trained token to the loss, the base's "
                "distribution from the same batch with the adapter disabled (a brake on forgetting; 0 = off; "
                "adeptlm/train/kl.py)"})
    distill_weight: float = field(default=1.0, metadata={
        "help": "weight of the mean KL(base || tuned) per position of the --distill_file records in the loss"})
    load_in_kbits: int = field(default=16, metadata={
        "help": "4 or 8: QLoRA through bitsandbytes (where the platform supports it); 16: no quantization",
        "choices": [4, 8, 16]})
    double_quant: bool = field(default=True, metadata={"help": "4-bit: quantize the quantization constants"})
    quant_type: str = field(default="nf4", metadata={"help": "4-bit type: nf4 or fp4", "choices": ["nf4", "fp4"]})


@dataclass
class CompatArguments:
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "start afresh even if output_dir holds checkpoints (otherwise an interrupted run resumes)"})
    evaluation_strategy: Optional[str] = field(default=None, metadata={
        "help": "seed name of --eval_strategy (no, steps, epoch)"})
    warmup_ratio: Optional[float] = field(default=None, metadata={
        "help": "seed name: warm-up as a share of all steps (transformers 5 takes it as --warmup_steps 0.05)"})
    group_by_length: bool = field(default=True, metadata={
        "help": "batch records of similar length together to cut padding (sets train_sampling_strategy)"})
    cpu_kernels: str = field(default="auto", metadata={
        "choices": ["auto", "on", "off"],
        "help": "the CPU speed paths (LM head at trained positions, fused LoRA forward, cheaper dropout masks, "
                "allocator, huge pages): auto = on for fp32 CPU training without FSDP/DeepSpeed/k-bit with the "
                "library releases they were tested with, off = the stock Trainer and PEFT path and the allocator's "
                "defaults (adeptlm/train/cpu/; ADEPT_CPU_KERNELS in the environment sets the default). "
                "Speed only: what is trained is set by --loss_divisor and --length_sampler"})
    loss_divisor: str = field(default="auto", metadata={
        "choices": ["auto", "epoch", "step"],
        "help": "what each optimizer step's summed loss is divided by: epoch = the epoch's mean trained tokens "
                "per step (every trained token weighs the same, however batches were grouped), step = the "
                "step's own count (the Trainer's); auto = epoch where the CPU speed paths run, else step"})
    length_sampler: str = field(default="auto", metadata={
        "choices": ["auto", "seeded", "stock"],
        "help": "length-grouped batches: seeded = shuffled from (seed, epoch) alone, so a resumed run sees the "
                "same batches; stock = the Trainer's (global RNG); auto = seeded where the CPU speed paths run"})
    cpu_matmul_precision: str = field(default="ieee", metadata={
        "choices": ["ieee", "bf16"],
        "help": "how CPU matrix products in fp32 training are computed: ieee = full fp32; bf16 = oneDNN rounds "
                "their inputs to bfloat16 and accumulates in fp32 (the CPU counterpart of TF32 on GPUs: weights, "
                "optimizer and everything else stay fp32); needs AMX or AVX512_BF16, refused elsewhere (SFT 1.35x "
                "faster on an AMX Xeon: bench/RESULTS.md)"})
    verbose: bool = field(default=False, metadata={
        "help": "also print the Trainer's metrics dict at each logging step (default: one line per logging step)"})
    cpu_fsdp: str = field(default="auto", metadata={
        "choices": ["auto", "off"],
        "help": "FSDP asked for on CPU processes (gloo): auto = shard with torch's FSDP2 (accelerate alone runs "
                "them as plain DDP), off = accelerate's own behaviour (see adeptlm/train/cpu_fsdp.py)"})


@dataclass
class TrainConfig:
    model: ModelArguments
    data: DataArguments
    lora: LoraArguments
    compat: CompatArguments
    training: "TrainingArguments"  # noqa: F821  (transformers' own)

    def as_dict(self) -> dict:
        out = {}
        for part in (self.model, self.data, self.lora, self.compat):
            out.update({f.name: getattr(part, f.name) for f in fields(part)})
        out.update({k: v for k, v in self.training.to_dict().items() if not k.startswith("_")})
        return out


# Data and LoRA options that only some stages use, by the kind of data (or the trainer) they belong
# to: hidden from the other stages' --help and refused there (stages.Stage.data, .kl_to_base).
ONLY_FOR = {"validation_split_percentage": ("corpus",), "block_size": ("corpus",), "packing": ("corpus",),
            "max_eval_samples": ("corpus", "instructions"), "data_cache_dir": ("corpus", "instructions"),
            "preprocessing_num_workers": ("corpus", "instructions"),
            "validation_file": ("instructions", "preferences", "feedback"),
            "max_seq_length": ("instructions",), "truncation": ("instructions",),
            "max_prompt_length": ("preferences",), "kl_to_base": ("kl_to_base",),
            "distill_file": ("instructions",), "distill_weight": ("instructions",)}


# ... except where the seed's own script for that stage accepted the option and ignored it: a note, not an error
SEED_IGNORED = {("sft", "validation_split_percentage"): "the seed's SFT accepted it and held nothing out; "
                                                        "adept sft evaluates on --validation_file"}


def foreign_options(stage: str) -> set[str]:
    """The options of ONLY_FOR that `adept <stage>` does not use."""
    st = get_stage(stage)
    own = {st.data} | ({"kl_to_base"} if st.kl_to_base else set())
    return {name for name, kinds in ONLY_FOR.items() if not own & set(kinds)}


def _users(name: str) -> str:
    from .stages import stages

    return ", ".join(f"adept {s.name}" for s in stages()
                     if ({s.data} | ({"kl_to_base"} if s.kl_to_base else set())) & set(ONLY_FOR[name]))


# Defaults that differ from TrainingArguments' own: a CPU-friendly, resumable run.
STAGE_DEFAULTS = {
    "output_dir": None,  # set per stage
    "save_strategy": "steps",
    "save_steps": 200,
    "save_total_limit": 3,
    "logging_steps": 10,
    "logging_first_step": True,
    "report_to": "tensorboard",
    "remove_unused_columns": False,
    "ddp_find_unused_parameters": False,
}


def _parser(stage: str):
    import argparse

    from transformers import HfArgumentParser

    st = get_stage(stage)
    parser = HfArgumentParser((ModelArguments, DataArguments, LoraArguments, CompatArguments, st.config()),
                              prog=f"adept {stage}", description=st.description)
    hidden = foreign_options(stage)
    for action in parser._actions:   # argparse's list of options (public in practice, read-only here)
        if action.dest in hidden:
            action.help = argparse.SUPPRESS
    return parser


def flag_value(value) -> str:
    """A YAML value as its command-line text: a list becomes 'a,b' (the comma form every list flag here
    takes), not Python's "['a', 'b']"."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def check_stage_flags(stage: str, flags: dict, where: str, reserved: tuple[str, ...] = ()) -> None:
    """Every key of a recipe's stage mapping is a flag of `adept <stage>` and its value parses; else one
    line naming the recipe file and the key (AdeptError, exit 2). Nothing is run."""
    import argparse

    if not isinstance(flags, dict):
        raise AdeptError(f"{where}: {stage}: expected a mapping of `adept {stage}` flags, got {type(flags).__name__}")
    hidden = foreign_options(stage)
    by_flag = {o.lstrip("-"): a for a in _parser(stage)._actions for o in a.option_strings if a.dest not in hidden}
    for key, value in flags.items():
        if key in reserved:
            raise AdeptError(f"{where}: {stage}.{key}: set by the recipe's run itself; remove it")
        action = by_flag.get(str(key))
        if action is None or key in ("h", "help"):
            raise AdeptError(f"{where}: {stage}.{key}: not a flag of `adept {stage}` (see adept {stage} --help)")
        if action.nargs == 0:
            continue
        texts = flag_value(value).split() if action.nargs in ("+", "*") else [flag_value(value)]
        try:
            parsed = [action.type(t) if action.type else t for t in texts]
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            raise AdeptError(f"{where}: {stage}.{key}: {value!r} is not a valid value for --{key}") from None
        if action.choices and any(v not in action.choices for v in parsed):
            choices = ", ".join(map(str, action.choices))
            raise AdeptError(f"{where}: {stage}.{key}: {value!r} is not one of {choices}")


def gpu_defaults(cuda: bool | None = None, bf16_supported: bool | None = None) -> dict:
    """What a user of this field expects on a CUDA machine, each overridable by its flag: bf16 mixed
    precision where the GPU has it (Ampere and newer; `--bf16 False` for fp32), as the seed's scripts
    ran. Attention is transformers' own default (PyTorch SDPA). Elsewhere fp32, said outright: TRL's
    DPO, ORPO and KTO configs (TRL 1.16) turn an unset bf16 into True even on a CPU, where bf16 autocast
    is an emulation on CPUs without AVX-512 BF16 (the DPO end-to-end test: 305 s in bf16, 47 s in fp32
    with torch held to AVX2 on the machine of 2026-12-05) and changes the numbers the other stages compute in fp32."""
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return {"bf16": False}
    bf16_supported = torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported
    return {"bf16": bool(bf16_supported)}


def parse_train_args(stage: str, argv: list[str]) -> TrainConfig:
    """Parse `adept <stage> [CONFIG.yaml] [--flags]`: YAML values become defaults, flags override them."""
    parser = _parser(stage)
    import torch

    # Without a GPU, say so: accelerate then runs several processes as CPU DDP over gloo (with
    # use_cpu unset it set up a process group whose loss scaling did not match one process).
    st = get_stage(stage)
    defaults = dict(STAGE_DEFAULTS, output_dir=f"runs/{stage}", use_cpu=not torch.cuda.is_available(),
                    **gpu_defaults(), **st.defaults)
    hidden = foreign_options(stage)
    argv = list(argv)
    if argv and not argv[0].startswith("-") and argv[0].endswith((".yaml", ".yml")):
        cfg_path = Path(argv.pop(0))
        loaded = read_yaml_mapping(cfg_path, "config file")
        known = {a.dest for a in parser._actions} - hidden
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise AdeptError(f"{cfg_path}: unknown option(s) {', '.join(unknown)}: see `adept {stage} --help`")
        defaults.update(loaded)
    parser.set_defaults(**defaults)
    from ..quiet import install

    install()  # library warnings the user cannot act on (adeptlm/quiet.py)
    try:
        model, data, lora, compat, training = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as exc:  # unknown flags, bad values: one line, exit 2
        raise AdeptError(f"adept {stage}: {exc}") from None
    for part in (data, lora):
        for f in fields(part):
            if f.name in hidden and getattr(part, f.name) != f.default:
                if (stage, f.name) in SEED_IGNORED:
                    print(f"adept: --{f.name} is ignored by adept {stage}: {SEED_IGNORED[stage, f.name]}", flush=True)
                    continue
                raise AdeptError(f"--{f.name} is not an option of adept {stage} (it is one of {_users(f.name)})")
    if compat.evaluation_strategy:
        training.eval_strategy = type(training.eval_strategy)(compat.evaluation_strategy)
    if compat.warmup_ratio is not None:
        if not 0 <= compat.warmup_ratio < 1:
            raise AdeptError(f"--warmup_ratio {compat.warmup_ratio}: expected a share in [0, 1)")
        training.warmup_steps = compat.warmup_ratio
    if training.use_liger_kernel:
        import importlib.util

        if importlib.util.find_spec("liger_kernel") is None:
            raise AdeptError("--use_liger_kernel needs Liger-Kernel (pip install liger-kernel; it runs on CUDA GPUs)")
    if lora.kl_to_base:
        if lora.kl_to_base < 0:
            raise AdeptError(f"--kl_to_base {lora.kl_to_base}: expected a weight >= 0")
        if lora.full_finetuning:
            raise AdeptError("--kl_to_base needs a LoRA adapter (the base is the model with it disabled), "
                             "not --full_finetuning")
    if data.distill_file:
        if lora.full_finetuning:
            raise AdeptError("--distill_file needs a LoRA adapter (the base is the model with it disabled), "
                             "not --full_finetuning")
        if lora.distill_weight <= 0:
            raise AdeptError(f"--distill_weight {lora.distill_weight}: expected a weight > 0")
    # TRL's preference records carry no input_ids to group by; their batches stay as their config has them.
    if compat.group_by_length and training.train_sampling_strategy == "random" and st.grouped:
        training.train_sampling_strategy = "group_by_length"
    return TrainConfig(model, data, lora, compat, training)
