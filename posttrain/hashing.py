"""Content identities of files and folders, fast enough to run on every plan.

A file's sha256 is remembered per (path, size, mtime, inode) in `$POSTTRAIN_CACHE_DIR/file_hashes.json`
(default ~/.cache/posttrain), so re-planning an unchanged pipeline reads no data file twice.
A model folder is identified more cheaply (see `folder_identity`): hashing 100 GB of weights on
every plan would make planning slow.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

BLOCK = 8 << 20  # read size: large blocks keep sha256 near disk speed
SMALL_FILE = 32 << 20  # in a model folder, files up to this size (configs, tokenizer) are hashed by content


def cache_root() -> Path:
    """Where posttrain keeps caches shared by every run (also used by workflows/data_check.py)."""
    return Path(os.environ.get("POSTTRAIN_CACHE_DIR") or Path.home() / ".cache" / "posttrain")


class FileHashes:
    """sha256 of files, cached across processes by (path, size, mtime_ns, inode)."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_root() / "file_hashes.json"
        self.entries: dict[str, list] = {}
        self.changed = False
        try:
            self.entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            pass  # no cache yet, or a corrupt one: recompute

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        entry = self.entries.get(key)
        if entry and entry[:3] == stamp:
            return entry[3]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(BLOCK):
                digest.update(block)
        self.entries[key] = [*stamp, digest.hexdigest()]
        self.changed = True
        return digest.hexdigest()

    def save(self) -> None:
        """Write the cache atomically; a read-only home only costs re-hashing next time."""
        if not self.changed:
            return
        self.entries = {k: v for k, v in self.entries.items() if os.path.exists(k)}  # forget deleted files
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.entries))
            os.replace(tmp, self.path)
            self.changed = False
        except OSError:
            pass


def _files(folder: Path) -> list[Path]:
    """Every file under `folder`, in a stable order; hidden files and folders are skipped."""
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(Path(root, n) for n in sorted(names) if not n.startswith("."))
    return out


def folder_identity(folder: Path, hashes: FileHashes, content: bool) -> str:
    """sha256 over (relative name, identity) of every file in `folder`.

    `content=True` (data folders): every file by its bytes. `content=False` (model folders): files
    up to SMALL_FILE (config, tokenizer, chat template) by their bytes, larger ones (weights) by
    size and modification time, so copying or re-saving the weights changes the identity but a
    100 GB folder costs a `stat` per file.
    """
    digest = hashlib.sha256()
    for path in _files(folder):
        stat = path.stat()
        if content or stat.st_size <= SMALL_FILE:
            ident = hashes.sha256(path)
        else:
            ident = f"size={stat.st_size},mtime_ns={stat.st_mtime_ns}"
        digest.update(f"{path.relative_to(folder).as_posix()}\0{ident}\0".encode())
    return digest.hexdigest()
