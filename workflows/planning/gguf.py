"""A GGUF starting checkpoint at plan time: the file's checks, and its tokenizer for length checks.

The tokenizer is extracted once per file content by a short subprocess (`python -m
stages.lib.gguf tokenizer`, ~9 s: transformers' GGUF tokenizer conversion), so the orchestrator
never imports transformers and later plans, dry runs included, read it from the cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from posttrain import gguf
from posttrain.paths import ROOT

EXTRACT_TIMEOUT = 600  # seconds; the conversion of a 100 MB file's tokenizer takes ~9 s


def plan_gguf(model: dict[str, Any]) -> tuple[gguf.GgufCheck | None, list[str]]:
    """(the checked file, problems) of `model.gguf`; None when the model is not a GGUF file."""
    if not model.get("gguf"):
        return None, []
    checked = gguf.check(model["gguf"])
    problems = list(checked.problems)
    if model.get("name_or_path"):
        problems.append("model.gguf: the model is given twice (model.name_or_path is set too); keep one")
    if not problems and checked.tokenizer is None and checked.sha256:
        problems += _extract_tokenizer(checked)
    return checked, problems


def _extract_tokenizer(checked: gguf.GgufCheck) -> list[str]:
    assert checked.path and checked.sha256
    out = gguf.tokenizer_dir(checked.sha256)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run([sys.executable, "-m", "stages.lib.gguf", "tokenizer", checked.path, str(out)],
                              capture_output=True, text=True, timeout=EXTRACT_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        return [f"model.gguf: extracting the tokenizer of {Path(checked.path).name} took over {EXTRACT_TIMEOUT} s"]
    if done.returncode != 0 or checked.tokenizer is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return [f"model.gguf: transformers cannot read the tokenizer of {Path(checked.path).name}: "
                + " / ".join(tail)]
    return []

