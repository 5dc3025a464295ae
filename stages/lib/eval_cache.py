"""One model's held-out evaluation, cached by what decides its numbers, so that the eval stages of a
sweep's variants (which differ in their own models only) measure the shared checkpoint and SFT
models once, and a re-run with one more model measures only that one.

The key covers:
- the weights: sha256 over their tensors (`model_digest`), with their dtype and the device type;
- the tokenizer's chat template, special tokens and vocabulary size;
- the held-out rows (tasks and pairs, in order) and every eval setting (lengths, batch size,
  extraction, checker);
- the code that measures: stages/eval.py, stages/lib/{sampling,scoring}.py, posttrain/verifiers.py,
  the checker's own source file, and the torch and transformers versions.
A model scored against a reference (a DPO/KTO model's implicit reward) is not cached: its reference
would have to be part of the key, and such models are the ones a variant trains anyway.
Entries are <cache root>/evals/<key>.json ({"metrics", "samples"}), written whole or not at all.
Delete the folder to reclaim space.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

from posttrain.hashing import cache_root
from posttrain.jsonio import read_json, write_json
from stages.lib.models import model_digest

CODE = ("stages/eval.py", "stages/lib/sampling.py", "stages/lib/scoring.py", "posttrain/verifiers.py")
ROOT = Path(__file__).resolve().parents[2]


def _source(checker: Any) -> bytes:
    try:
        path = inspect.getsourcefile(checker)
    except TypeError:
        path = None
    return Path(path).read_bytes() if path and Path(path).is_file() else repr(checker).encode()


def key(model: Any, tokenizer: Any, settings: dict[str, Any], tasks: list[dict[str, Any]],
        pairs: list[Any], checker: Any) -> str:
    import torch
    import transformers

    parameter = next(model.parameters())
    digest = hashlib.sha256()
    parts = [model_digest(model), str(parameter.dtype), parameter.device.type,
             tokenizer.chat_template or "", json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str),
             str(len(tokenizer)), json.dumps(settings, sort_keys=True, default=str),
             json.dumps(tasks, sort_keys=True, default=str), json.dumps(pairs, default=str),
             torch.__version__, transformers.__version__]
    for part in parts:
        digest.update(part.encode() + b"\0")
    for name in CODE:
        digest.update((ROOT / name).read_bytes())
    digest.update(_source(checker))
    return digest.hexdigest()


def _path(cache_key: str) -> Path:
    return cache_root() / "evals" / f"{cache_key}.json"


def read(cache_key: str) -> tuple[dict[str, float], list[dict[str, Any]]] | None:
    """(metrics, samples without their model label) of an earlier evaluation, or None."""
    entry = read_json(_path(cache_key))
    if not isinstance(entry, dict) or not isinstance(entry.get("metrics"), dict):
        return None
    return entry["metrics"], list(entry.get("samples") or [])


def write(cache_key: str, metrics: dict[str, float], samples: list[dict[str, Any]]) -> None:
    try:
        write_json(_path(cache_key), {"metrics": metrics, "samples": samples}, indent=None)
    except OSError as err:  # a cache that cannot be written costs time later, never this run
        print(f"warning: could not cache this evaluation ({err})", file=sys.stderr)
