"""Load a stage's data sources into the columns its TRL trainer expects.

Sources are local files/folders (JSONL, JSON, Parquet, CSV) or hub dataset ids, loaded with
`datasets.load_dataset`; several sources are concatenated (capped by `max_rows`) and shuffled by seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The columns each format keeps; everything else (e.g. a `task` tag) is dropped before training.
COLUMNS: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
    "preference": ("prompt", "chosen", "rejected"),
    "unpaired_preference": ("prompt", "completion", "label"),
}
LOADERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_source(source: dict[str, Any]) -> Any:
    """One source as a `datasets.Dataset`."""
    from datasets import load_dataset

    path = Path(source["path"])
    if path.is_file():
        return load_dataset(LOADERS.get(path.suffix, "json"), data_files=str(path), split="train")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in LOADERS)
        if not files:
            raise FileNotFoundError(f"{path}: no {', '.join(LOADERS)} files in this folder")
        return load_dataset(LOADERS[files[0].suffix], data_files=[str(f) for f in files], split="train")
    return load_dataset(source["path"], source.get("name"), split=source.get("split", "train"),
                        revision=source.get("revision"))


def _combine(sources: list[dict[str, Any]], fmt: str, seed: int, shuffle: bool) -> Any:
    from datasets import concatenate_datasets

    parts = []
    for source in sources:
        ds = load_source(source)
        ds = ds.select_columns([c for c in COLUMNS.get(fmt, ds.column_names) if c in ds.column_names])
        if source.get("max_rows") is not None:
            ds = ds.select(range(min(source["max_rows"], len(ds))))
        parts.append(ds)
    ds = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return ds.shuffle(seed=seed) if shuffle else ds


def load_datasets(data: dict[str, Any], target_format: str | None = None) -> tuple[Any, Any]:
    """(train, eval-or-None) in `target_format` (default: the declared format)."""
    fmt = data["format"]
    seed = data["seed"]
    train = _combine(data["sources"], fmt, seed, data.get("shuffle", True))
    evaluation = _combine(data["eval_sources"], fmt, seed, False) if data.get("eval_sources") else None
    if evaluation is None and data.get("eval_fraction"):
        split = train.train_test_split(test_size=data["eval_fraction"], seed=seed)
        train, evaluation = split["train"], split["test"]
    if target_format and target_format != fmt:
        train, evaluation = convert(train, fmt, target_format), convert(evaluation, fmt, target_format)
    return train, evaluation


def convert(ds: Any, source_format: str, target_format: str) -> Any:
    """Convert between formats; only the lossless conversions a stage needs are offered."""
    if ds is None:
        return None
    if (source_format, target_format) == ("preference", "unpaired_preference"):
        from trl.data_utils import unpair_preference_dataset

        return unpair_preference_dataset(ds)
    raise ValueError(f"cannot convert {source_format} data to {target_format}")
