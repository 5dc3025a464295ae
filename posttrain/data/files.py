"""Data sources without `datasets`: which files a source is, their rows with 1-based positions, and
content fingerprints. Used by the planner (which must stay light) and by the stage processes.

A source is a local file (JSONL, JSON, Parquet, CSV), a local folder (laid out like a hub dataset
repo: its `split` is found as `datasets.load_dataset` finds it), or a hub dataset id.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from posttrain.data.strict import (
    BOM,
    SURROGATE,
    RepeatedKeys,
    SourceError,
    StrictJSON,
    data_suffix,
    open_data,
    strict_mark,
    utf8_problem,
)
from posttrain.hashing import FileHashes
from posttrain.names import quoted
from posttrain.refs import DATA_SUFFIXES, names_data_file
from posttrain.spec import Source

# datasets' split keywords (datasets/data_files.py SPLIT_KEYWORDS) and the name separators around them.
SPLIT_KEYWORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "dev", "val"),
                  "test": ("test", "testing", "eval", "evaluation")}
_SEP = r"[-._ 0-9]"
_SHARDED = re.compile(r"^data/(?P<split>\w+)-\d{5}-of-\d{5}[^/]*\.[^/]+$")
_IGNORED = {"README.md", "config.json", "dataset_info.json", "dataset_infos.json", "dataset_dict.json"}


@dataclass
class BadRow:
    """A row that could not even be parsed (invalid JSON, a ragged CSV line)."""

    reason: str


def _data_files(folder: Path) -> list[str]:
    """Data files under `folder` as posix paths relative to it; hidden and `__x` folders skipped."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        for name in sorted(files):
            if not name.startswith(".") and name not in _IGNORED and names_data_file(name):
                out.append(Path(root, name).relative_to(folder).as_posix())
    return out


def _readme_configs(folder: Path) -> list[dict[str, Any]]:
    readme = folder / "README.md"
    if not readme.is_file():
        return []
    text = readme.read_text(encoding="utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not match:
        return []
    meta = yaml.safe_load(match.group(1)) or {}
    return list(meta.get("configs") or []) if isinstance(meta, dict) else []


def _config_splits(folder: Path, config: dict[str, Any]) -> dict[str, list[str]]:
    """{split: files} from a README `configs:` entry's `data_files` patterns (relative to `data_dir`)."""
    data_files = config.get("data_files") or []
    if isinstance(data_files, str):
        entries = [{"split": "train", "path": data_files}]
    elif isinstance(data_files, list) and all(isinstance(e, dict) for e in data_files):
        entries = data_files
    else:
        entries = [{"split": "train", "path": list(data_files)}]
    base = folder / config.get("data_dir", "")
    splits: dict[str, list[str]] = {}
    for entry in entries:
        patterns = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
        files = sorted({p.relative_to(folder).as_posix() for pattern in patterns for p in base.glob(pattern)
                        if p.is_file()})
        splits.setdefault(str(entry.get("split", "train")), []).extend(files)
    return splits


def _keyword_splits(files: list[str], in_dir: bool) -> dict[str, list[str]]:
    splits: dict[str, list[str]] = {}
    for rel in files:
        parts = rel.split("/")
        for split, keywords in SPLIT_KEYWORDS.items():
            words = "|".join(keywords)
            if in_dir:
                hit = any(re.fullmatch(rf"(?:.*{_SEP})?(?:{words})(?:{_SEP}.*)?", d) for d in parts[:-1])
            else:
                hit = bool(re.match(rf"^(?:{words}){_SEP}|.*{_SEP}(?:{words}){_SEP}", parts[-1]))
            if hit:
                splits.setdefault(split, []).append(rel)
                break
    return splits


def folder_splits(folder: Path, name: str | None = None) -> dict[str, list[Path]]:
    """{split: files} of a local dataset folder, by the rules `datasets.load_dataset(folder)` follows.

    In order: the README's `configs:` (config `name`, or the default one), sharded names
    (`data/train-00000-of-00002.parquet`), split keywords in folder names, then in file names
    (`train.jsonl`, `my-test.csv`); otherwise every file is `train`.

    Raises:
        SourceError: no data files, several file types, or an unknown config name.
    """
    configs = _readme_configs(folder)
    if configs:
        by_name = {c.get("config_name", "default"): c for c in configs}
        if name is None:
            defaults = [c for c in configs if c.get("default")]
            config = defaults[0] if defaults else by_name.get("default") or (configs[0] if len(configs) == 1 else None)
            if config is None:
                raise SourceError(f"{folder}/README.md defines configs {', '.join(by_name)}; choose one with `name`")
        elif name in by_name:
            config = by_name[name]
        else:
            raise SourceError(f"no config '{name}' in {folder}/README.md (configs: {', '.join(by_name)})")
        found = _config_splits(folder, config)
    else:
        files = _data_files(folder)
        sharded: dict[str, list[str]] = {}
        for rel in files:
            if m := _SHARDED.match(rel):
                sharded.setdefault(m.group("split"), []).append(rel)
        found = sharded or _keyword_splits(files, in_dir=True) or _keyword_splits(files, in_dir=False) or (
            {"train": files} if files else {})
    if not any(found.values()):
        raise SourceError(f"{folder}: no {', '.join(DATA_SUFFIXES)} files in this folder")
    suffixes = {data_suffix(Path(f))[0] for fs in found.values() for f in fs}
    if len(suffixes) > 1:
        raise SourceError(f"{folder}: mixes {', '.join(sorted(suffixes))} files; keep one file type per folder")
    return {split: [folder / f for f in fs] for split, fs in found.items()}


def source_files(source: Source) -> list[Path] | None:
    """The local files a source reads, or None for a hub dataset id.

    Raises:
        SourceError: a folder without the requested split (or no data files at all).
    """
    path = Path(source.path or "").expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        return None
    splits = folder_splits(path, source.name)
    split = source.split or "train"
    if split not in splits:
        raise SourceError(f"{path}: no '{split}' split (found: {', '.join(splits)}); set `split`")
    return splits[split]


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    strict = StrictJSON()
    with open_data(path) as f:
        for number, raw in enumerate(f, 1):
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield number, BadRow(utf8_problem(raw, err))
                continue
            if not line.strip():
                continue
            bad = strict.bad
            try:
                row = strict.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as err:
                yield number, BadRow(f"not valid JSON ({err.msg} at column {err.colno})")
                continue
            yield number, (BadRow(f"not valid JSON: {strict_mark(row)}") if strict.bad != bad else row)


def _iter_json(path: Path) -> Iterator[tuple[int, Any]]:
    with open_data(path) as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise SourceError(f"{path} line {line}: not valid UTF-8 (byte {raw[err.start]:#04x}); "
                          f"re-encode the file as UTF-8") from None
    strict = StrictJSON()
    try:
        data = strict.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # JSON Lines in a .json file, as `datasets` accepts
            yield from _iter_jsonl(path)
            return
        raise SourceError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    if isinstance(data, RepeatedKeys):
        raise SourceError(f"{path}: {data.reason}")
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        columns = list(data)
        data = [dict(zip(columns, values)) for values in zip(*data.values())]  # column-oriented JSON
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a list of row objects (or JSON Lines), got a JSON {type(data).__name__}")
    for number, row in enumerate(data, 1):
        mark = strict_mark(row) if strict.bad else None
        yield number, BadRow(f"not valid JSON: {mark}") if mark else row


def _iter_csv(path: Path) -> Iterator[tuple[int, Any]]:
    with open_data(path) as binary, io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape",
                                                     newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if any(SURROGATE.search(name) for name in header):
            raise SourceError(f"{path} line 1: the header is not valid UTF-8; re-encode the file as UTF-8")
        if repeated := sorted({name for name in header if header.count(name) > 1}):
            raise SourceError(f"{path} line 1: column {quoted(repeated[0])} appears twice in the header")
        start = 2
        for row in reader:
            if None in row:
                yield start, BadRow(f"{len(row) - 1 + len(row[None])} cells, the header has {len(row) - 1}")
            elif column := next((k for k, v in row.items() if isinstance(v, str) and SURROGATE.search(v)), None):
                byte = ord(SURROGATE.search(row[column]).group()) - 0xDC00  # type: ignore[union-attr]
                yield start, BadRow(f"not valid UTF-8 (byte {byte:#04x} in column {quoted(column)}); "
                                    f"re-encode the file as UTF-8")
            else:
                if isinstance(row.get("label"), str) and row["label"].lower() in ("true", "false"):
                    row["label"] = row["label"].lower() == "true"  # CSV has no booleans
                yield start, row
            start = reader.line_num + 1


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq  # ~0.4 s: only when a Parquet source is used

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield number, row


READERS = {".jsonl": _iter_jsonl, ".json": _iter_json, ".csv": _iter_csv, ".parquet": _iter_parquet}


def iter_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(row number, row) for every row of a file; a `BadRow` where a row cannot be parsed (invalid
    UTF-8, not JSON, NaN, a repeated key, a ragged CSV line). A UTF-8 byte-order mark is skipped;
    `.gz`/`.bz2`/`.xz` after the data suffix are read compressed.

    Row numbers are 1-based lines for JSONL and CSV (the header is line 1), item numbers for JSON
    and Parquet: what an editor or spreadsheet shows.

    Raises:
        SourceError: an unknown file type, undeclared or unreadable compression, a whole-file problem.
    """
    suffix, _ = data_suffix(path)
    reader = READERS.get(suffix)
    if reader is None:
        raise SourceError(f"{path}: unknown file type '{suffix or path.name}' (use {', '.join(DATA_SUFFIXES)}, "
                          f"optionally compressed: .jsonl.gz)")
    if suffix == ".parquet":
        open_data(path).close()  # a compressed Parquet file is named, not misread
    yield from reader(path)


_HASHES: FileHashes | None = None


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, from the cache shared with stage fingerprints (posttrain/hashing.py)."""
    global _HASHES
    if _HASHES is None:
        _HASHES = FileHashes()
    return _HASHES.sha256(path)


def save_file_hashes() -> None:
    if _HASHES is not None:
        _HASHES.save()


def dataset_fingerprint(source: Source) -> str:
    """A content fingerprint of one source, for caching and lineage: sha256 over its files' bytes
    (names relative to the source, in order). A hub id has no local bytes: it is fingerprinted by
    (id, config, split, revision), so pin `revision` for the fingerprint to mean the content.

    Raises:
        SourceError: as `source_files`.
    """
    files = source_files(source)
    digest = hashlib.sha256()
    if files is None:
        ident = {k: getattr(source, k) for k in ("path", "name", "split", "revision")}
        digest.update(b"hub:" + json.dumps(ident, sort_keys=True).encode())
    else:
        base = Path(source.path or "").expanduser()
        for path in files:
            rel = path.name if base.is_file() else path.relative_to(base).as_posix()
            digest.update(rel.encode() + b"\0" + file_sha256(path).encode() + b"\0")
    return digest.hexdigest()
