"""Convert a GGUF file into a plain Hugging Face model dir, with transformers' own GGUF loader.

The weights are the file's quantized values dequantized to float32 (for SmolLM2's Q4_1 file: the
Q4_1 approximation of the original bf16 weights, not the original weights), saved as safetensors
with the config, the tokenizer and its chat template, so every later stage loads it with plain
`from_pretrained`.

`python -m stages.lib.gguf tokenizer <file.gguf> <out_dir>` extracts the tokenizer alone (~9 s
with the imports): the planner runs it once per file content to measure token lengths before the
checkpoint stage has converted anything (posttrain/gguf.py keeps it in the cache).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any


def load_tokenizer(gguf_path: str) -> Any:
    from transformers import AutoTokenizer

    path = Path(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(gguf_path: str) -> Any:
    """The GGUF file's model, dequantized to float32."""
    import torch
    from transformers import AutoModelForCausalLM, GgufConfig

    path = Path(gguf_path)
    return AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32,
        quantization_config=GgufConfig(gguf_file=path.name, dequantize=True))


def save_tokenizer(tokenizer: Any, out_dir: str | Path) -> None:
    """Write the tokenizer into `out_dir` whole or not at all (a temporary folder renamed in)."""
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(str(tmp))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, out)
    except OSError:  # another process extracted it first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] != "tokenizer":
        raise SystemExit("usage: python -m stages.lib.gguf tokenizer <file.gguf> <out_dir>")
    save_tokenizer(load_tokenizer(argv[1]), argv[2])


if __name__ == "__main__":
    main()
