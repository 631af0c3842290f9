"""Checkpoint files read and written one tensor at a time: shared by merge and GGUF export.

A small safetensors reader/writer rather than the safetensors package, because that package only
writes a whole dict of tensors at once and maps input files into memory, where every page read
counts towards the process's resident size. `.bin` checkpoints are read through torch.load(mmap=True).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import AdeptError

# safetensors dtype names; torch types are looked up lazily so that importing this module is cheap.
ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
             "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
             "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


# --------------------------------------------------------------------------- safetensors streaming

def read_header(path: Path) -> tuple[dict, int]:
    """The safetensors header of a file and the offset where its data starts."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise AdeptError(f"{path}: not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(fh.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise AdeptError(f"{path}: not a safetensors file (unreadable header)") from None
    return header, 8 + size


def read_tensor(fh, info: dict, data_start: int):
    import torch

    dtype = getattr(torch, ST_DTYPES[info["dtype"]])
    begin, end = info["data_offsets"]
    out = torch.empty(info["shape"], dtype=dtype)
    fh.seek(data_start + begin)
    view = memoryview(out.reshape(-1).view(torch.uint8).numpy())
    if fh.readinto(view) != end - begin:
        raise AdeptError(f"{fh.name}: truncated tensor data")
    return out


class ShardWriter:
    """Writes one safetensors file whose tensors (names, dtypes, shapes) are known in advance."""

    def __init__(self, path: Path, layout: list[tuple[str, str, list[int]]]):
        import torch

        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, st_dtype, shape in layout:
            itemsize = torch.empty((), dtype=getattr(torch, ST_DTYPES[st_dtype])).element_size()
            nbytes = math.prod(shape) * itemsize
            header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)          # the format pads the header to 8 bytes with spaces
        self.header, self.total = header, offset
        self.order = [name for name, _, _ in layout]
        self.fh = open(path, "wb")
        self.fh.write(struct.pack("<Q", len(raw)) + raw)
        self.next = 0

    def write(self, name: str, tensor) -> None:
        import torch

        if name != self.order[self.next]:
            raise RuntimeError(f"tensor {name} written out of order")
        info = self.header[name]
        if list(tensor.shape) != info["shape"] or str(tensor.dtype).split(".")[-1] != ST_DTYPES[info["dtype"]]:
            raise RuntimeError(f"tensor {name} does not match its declared layout")
        self.fh.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))
        self.next += 1

    def close(self) -> None:
        if self.next != len(self.order):
            raise RuntimeError("shard closed before all tensors were written")
        self.fh.close()


def st_name(dtype) -> str:
    name = str(dtype).split(".")[-1]
    return next(k for k, v in ST_DTYPES.items() if v == name)


# --------------------------------------------------------------------------- base checkpoints

@dataclass
class Shard:
    path: Path
    kind: str                  # "safetensors" or "bin"
    out_name: str


def base_shards(base: Path) -> list[Shard]:
    """The base checkpoint's files in order, for every layout transformers writes."""
    def indexed(index_file: Path, kind: str) -> list[Shard]:
        try:
            files = sorted(set(json.loads(index_file.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError):
            raise AdeptError(f"{index_file}: field 'weight_map' missing or not valid JSON") from None
        n = len(files)
        for f in files:
            if not (base / f).is_file():
                raise AdeptError(f"{index_file}: lists shard '{f}' which is missing")
        return [Shard(base / f, kind, f"model-{i + 1:05d}-of-{n:05d}.safetensors") for i, f in enumerate(files)]

    if (base / "model.safetensors").is_file():
        return [Shard(base / "model.safetensors", "safetensors", "model.safetensors")]
    if (base / "model.safetensors.index.json").is_file():
        return indexed(base / "model.safetensors.index.json", "safetensors")
    if (base / "pytorch_model.bin").is_file():
        return [Shard(base / "pytorch_model.bin", "bin", "model.safetensors")]
    if (base / "pytorch_model.bin.index.json").is_file():
        return indexed(base / "pytorch_model.bin.index.json", "bin")
    raise AdeptError(f"{base}: no model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
                     "pytorch_model.bin.index.json")


def parameter_count(model_dir: Path) -> int:
    """Elements in a checkpoint's tensors (from the safetensors headers; a .bin file counted as fp32)."""
    total = 0
    for shard in base_shards(model_dir):
        if shard.kind != "safetensors":
            total += shard.path.stat().st_size // 4
            continue
        header, _ = read_header(shard.path)
        for name, info in header.items():
            if name != "__metadata__":
                n = 1
                for d in info["shape"]:
                    n *= d
                total += n
    return total


class ShardReader:
    """Tensor names, layouts and data of one base shard, one tensor in memory at a time."""

    def __init__(self, shard: Shard):
        import torch

        self.shard = shard
        if shard.kind == "safetensors":
            self.header, self.start = read_header(shard.path)
            self.header.pop("__metadata__", None)
            self.names = sorted(self.header, key=lambda n: self.header[n]["data_offsets"][0])
            self.fh = open(shard.path, "rb")
        else:
            # mmap keeps the pickle's storage on disk until a tensor is touched.
            self.state = torch.load(shard.path, map_location="cpu", weights_only=True, mmap=True)
            self.names = list(self.state)

    def layout(self, name: str) -> tuple[str, list[int]]:
        if self.shard.kind == "safetensors":
            return self.header[name]["dtype"], self.header[name]["shape"]
        t = self.state[name]
        return st_name(t.dtype), list(t.shape)

    def get(self, name: str):
        if self.shard.kind == "safetensors":
            return read_tensor(self.fh, self.header[name], self.start)
        return self.state[name]

    def close(self) -> None:
        if self.shard.kind == "safetensors":
            self.fh.close()
        else:
            del self.state
