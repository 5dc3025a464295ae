"""How a config names a model or dataset: a stage, the pipeline's checkpoint, a local path, a hub id."""

from __future__ import annotations

import re
from pathlib import Path

CHECKPOINT = "checkpoint"  # the implicit stage holding the pipeline's starting model (the `model` group)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name
HUB_PREFIX = "hf:"  # `hf:gpt2`: a hub id without an org
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")  # a missing path with these is a file, not a hub id
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz")  # read after a data suffix: train.jsonl.gz


def looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", ".", "~"))


def names_data_file(path: str) -> bool:
    """`x.jsonl`, `x.jsonl.gz`: a file name, not a hub id, whether or not it exists."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes.pop()
    return bool(suffixes) and suffixes[-1] in DATA_SUFFIXES


def is_hub_id(path: str) -> bool:
    """`org/name` that is not a local path and not a data file name."""
    return not Path(path).expanduser().exists() and bool(HUB_ID.match(path)) and not names_data_file(path)


def model_label(ref: str) -> str:
    """How a model is named in an eval's metrics: its stage name, or the last part of a dir or hub id."""
    return ref.removeprefix(HUB_PREFIX).rstrip("/").rsplit("/", 1)[-1] or ref
