"""Reading data files strictly: compression named or read, UTF-8 refused when invalid, JSON refused
when it is not JSON (NaN, Infinity) or silently loses data (a key given twice).

Python's defaults are loose on all three (`errors="replace"` turns a Latin-1 byte into U+FFFD,
`json.loads` accepts NaN and keeps the last of two equal keys); posttrain/data/files.py reads every
row through these, for the planner and the stage alike.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from posttrain.names import quoted


class SourceError(Exception):
    """A source that cannot be read at all (not a row problem); the message says what to do."""


# Compression, by the magic bytes a file starts with. Declared by the file's last suffix
# (`train.jsonl.gz`), the stdlib ones are read; any other is named so the user can decompress it.
MAGIC = {b"\x1f\x8b": ".gz", b"BZh": ".bz2", b"\xfd7zXZ\x00": ".xz", b"\x28\xb5\x2f\xfd": ".zst",
         b"PK\x03\x04": ".zip"}
OPENERS: dict[str, Callable[..., BinaryIO]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
COMPRESSION_NAMES = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd", ".zip": "zip"}
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark: harmless, skipped
SURROGATE = re.compile("[\udc80-\udcff]")  # an undecodable byte, as errors="surrogateescape" keeps it


def data_suffix(path: Path) -> tuple[str, str | None]:
    """(the data suffix, the compression suffix or None): `a.jsonl.gz` -> ('.jsonl', '.gz')."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in MAGIC.values():
        return (suffixes[-2] if len(suffixes) > 1 else ""), suffixes[-1]
    return (suffixes[-1] if suffixes else ""), None


def open_data(path: Path) -> BinaryIO:
    """The file's bytes, decompressed when its name says so.

    Raises:
        SourceError: compressed but not named so (or named so but not), or a compression we cannot read.
    """
    _, declared = data_suffix(path)
    with open(path, "rb") as f:
        head = f.read(8)
    found = next((ext for magic, ext in MAGIC.items() if head.startswith(magic)), None)
    if found and found != declared:
        hint = (f"rename it to {path.name}{found} to have it read, or decompress it" if found in OPENERS
                else f"decompress it ({COMPRESSION_NAMES[found]} files are not read directly)")
        raise SourceError(f"{path}: is {COMPRESSION_NAMES[found]}-compressed but named {path.name}; {hint}")
    if declared and not found:
        raise SourceError(f"{path}: is named {declared} but is not {COMPRESSION_NAMES[declared]}-compressed; "
                          f"rename it")
    if declared and declared not in OPENERS:
        raise SourceError(f"{path}: {COMPRESSION_NAMES[declared]} files are not read directly; decompress it")
    return OPENERS[declared](path, "rb") if declared else open(path, "rb")


class _Invalid:
    """What strict JSON found in a value (NaN, a repeated key), kept in place to name its row."""

    def __init__(self, reason: str):
        self.reason = reason


class RepeatedKeys(dict):
    reason = ""


class StrictJSON:
    """json.loads that marks, instead of silently accepting, NaN/Infinity (not JSON) and repeated keys
    (JSON keeps only the last); `bad` counts the marks made, so clean rows are never walked."""

    def __init__(self):
        self.bad = 0
        self.decoder = json.JSONDecoder(object_pairs_hook=self._object, parse_constant=self._constant)

    def _object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        self.bad += 1
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        marked = RepeatedKeys(obj)
        marked.reason = f"key {quoted(repeated)} appears twice in one object (JSON would keep only the last)"
        return marked

    def _constant(self, name: str) -> _Invalid:
        self.bad += 1
        return _Invalid(f"{name} is not a JSON value (write null or a number)")

    def loads(self, text: str) -> Any:
        return self.decoder.decode(text)


def strict_mark(value: Any) -> str | None:
    """The first strict-JSON mark inside `value`, or None."""
    if isinstance(value, _Invalid):
        return value.reason
    if isinstance(value, RepeatedKeys):
        return value.reason
    if isinstance(value, dict):
        return next((m for v in value.values() if (m := strict_mark(v))), None)
    if isinstance(value, list):
        return next((m for v in value if (m := strict_mark(v))), None)
    return None


def utf8_problem(raw: bytes, err: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 (byte {raw[err.start]:#04x} at byte {err.start + 1} of the row); re-encode the file as UTF-8"
